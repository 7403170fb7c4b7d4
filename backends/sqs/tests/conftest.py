"""The sqs:// tests use `moto_endpoint`, the session moto server of the root conftest.py."""
