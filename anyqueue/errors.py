"""The exceptions anyqueue raises; a backend's native exceptions never leak past the core.

Error
├── BackendNotFound      (also LookupError)
├── ConfigError          (also ValueError)
├── ConnectionError      broker unreachable after the configured retries
├── Closed               the broker, subscription or worker was closed
├── Timeout              (also TimeoutError)
├── MessageTooLarge      (also ValueError)
├── InvalidName          (also ValueError)
├── NotSupported         this backend does not claim the feature
└── RemoteError          a request's server raised
"""

from __future__ import annotations

import builtins


class Error(Exception):
    """Base class of every anyqueue error."""


class BackendNotFound(Error, LookupError):
    """No installed backend plugin handles the URL's scheme."""


class ConfigError(Error, ValueError):
    """A URL or option is unknown, ill-typed or out of range."""


class ConnectionError(Error):
    """The broker could not be reached, or the link dropped, after the configured retries."""


class Closed(Error):
    """The broker, subscription or worker is closed."""


class Timeout(Error, builtins.TimeoutError):
    """Nothing arrived in time (for example no reply to a request)."""


class MessageTooLarge(Error, ValueError):
    """A body exceeds the backend's `capabilities.max_body_bytes`; nothing was sent."""


class InvalidName(Error, ValueError):
    """A topic, group or pattern name breaks the portable naming rules."""


class NotSupported(Error):
    """The backend does not claim this feature (see `broker.capabilities`)."""


class RemoteError(Error):
    """A request's server raised: `.type` is the exception's class name, `.message` its text."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}" if message else type)
        self.type = type
        self.message = message
