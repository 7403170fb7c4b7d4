"""The RabbitMQ tests use `rabbitmq_node`, the session node of the root conftest.py."""
