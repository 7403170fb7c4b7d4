"""The redis backend for anyqueue."""
