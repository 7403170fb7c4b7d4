"""The sqs backend for anyqueue."""
