"""Registers the kafka backend (work in progress: registers nothing yet)."""
