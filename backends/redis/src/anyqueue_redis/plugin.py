"""Registers the redis backend (work in progress: registers nothing yet)."""
