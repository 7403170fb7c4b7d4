"""The Kafka tests use `tansu`, the session broker of the root conftest.py."""
