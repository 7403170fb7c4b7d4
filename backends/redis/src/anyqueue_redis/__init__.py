"""The Redis backend of anyqueue: `redis://` and `rediss://` (see `driver.py` for its features,
URL format and options, and docs/backends/redis.md for the key layout and semantics)."""
