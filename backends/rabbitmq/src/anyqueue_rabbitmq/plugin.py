"""Registers the rabbitmq backend (work in progress: registers nothing yet)."""
