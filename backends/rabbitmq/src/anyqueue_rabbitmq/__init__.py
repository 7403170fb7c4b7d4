"""The rabbitmq backend for anyqueue."""
