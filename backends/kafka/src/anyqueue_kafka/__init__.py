"""The kafka backend for anyqueue."""
