"""Registers the sqs backend (work in progress: registers nothing yet)."""
