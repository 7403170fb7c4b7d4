"""anyqueue: one messaging API over RabbitMQ, Redis, Amazon SQS, Kafka and memory, by URL.

with anyqueue.connect("redis://localhost:6379/0") as broker:
    broker.declare("tasks", group="workers")
    broker.publish("tasks", b"resize 42")
"""

from .broker import Broker, connect
from .capabilities import Capabilities
from .errors import (
    BackendNotFound,
    Closed,
    ConfigError,
    ConnectionError,
    Error,
    InvalidName,
    MessageTooLarge,
    NotSupported,
    RemoteError,
    Timeout,
)
from .message import Message
from .plugins import BackendSpec, backends
from .subscription import Subscription
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "BackendNotFound",
    "BackendSpec",
    "Broker",
    "Capabilities",
    "Closed",
    "ConfigError",
    "ConnectionError",
    "Error",
    "InvalidName",
    "Message",
    "MessageTooLarge",
    "NotSupported",
    "RemoteError",
    "Subscription",
    "Timeout",
    "Worker",
    "__version__",
    "backends",
    "connect",
]
