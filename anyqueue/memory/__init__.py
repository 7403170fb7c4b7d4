"""The in-process `memory://` backend (see `driver.py` for its features and URL format)."""
