"""anyqueue's Kafka backend: `kafka://host:port` through confluent-kafka.

The driver lives in `anyqueue_kafka.driver` and is imported only when a kafka:// URL is used.
"""
