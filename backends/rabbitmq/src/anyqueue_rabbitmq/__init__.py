"""anyqueue's RabbitMQ backend: `amqp://` and `amqps://` URLs, through pika.

Installed, it registers itself through the `anyqueue` entry point; use it with
`anyqueue.connect("amqp://guest:guest@localhost:5672/")`. See `anyqueue_rabbitmq.driver`.
"""
