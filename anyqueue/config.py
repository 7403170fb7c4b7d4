"""Connection URLs and backend options: parsing, typed validation and secret redaction.

A backend declares its options as a dataclass; `parse_options` fills it from the URL's query
string and `connect()` keywords, converting strings by the field's type and rejecting unknown
names. Fields marked `secret()` and URL passwords are never shown: they print as `***`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import ConfigError

REDACTED = "***"
T = TypeVar("T")


def secret(default: Any = None) -> Any:
    """A dataclass field holding a credential: redacted wherever options are shown."""
    return field(default=default, metadata={"secret": True}, repr=False)


@dataclass(frozen=True)
class BrokerURL:
    """A parsed connection URL. Its repr and str never show the password."""

    scheme: str
    host: str | None
    port: int | None
    username: str | None
    password: str | None = field(repr=False)
    path: str
    query: Mapping[str, str]
    netloc: str

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Split `url`; a malformed URL is a ConfigError that does not echo the password."""
        if not isinstance(url, str) or "://" not in url:
            # not echoed: without a scheme we cannot tell which part may be a password
            raise ConfigError(
                "not a broker URL: expected SCHEME://..., e.g. memory://, redis://localhost:6379/0"
            )
        try:
            parts = urlsplit(url)
            # a host list (kafka://h1:9092,h2:9092) has no single host or port; netloc keeps it
            host_list = "," in parts.netloc.rpartition("@")[2]
            port = None if host_list else parts.port
        except ValueError as err:
            raise ConfigError(f"malformed URL {_redact_text(url)!r}: {err}") from None
        query: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in query:
                raise ConfigError(f"option {name!r} is given twice in the URL")
            query[name] = value
        netloc = parts.netloc.rpartition("@")[2]
        return cls(
            scheme=parts.scheme.lower(),
            host=None if host_list else parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            path=unquote(parts.path),
            query=query,
            netloc=netloc,
        )

    def redacted(self) -> str:
        """The URL with its password replaced by `***` (secret query options too)."""
        user = ""
        if self.username is not None:
            user = quote(self.username, safe="")
            if self.password is not None:
                user += ":" + REDACTED
            user += "@"
        elif self.password is not None:
            user = ":" + REDACTED + "@"
        query = "&".join(
            f"{k}={REDACTED if _looks_secret(k) else v}" for k, v in self.query.items()
        )
        return f"{self.scheme}://{user}{self.netloc}{self.path}" + (f"?{query}" if query else "")

    def secrets(self) -> list[str]:
        """Every credential in the URL, for scrubbing error messages."""
        found = [self.password] if self.password else []
        found += [v for k, v in self.query.items() if _looks_secret(k) and v]
        return found

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"BrokerURL({self.redacted()!r})"


_SECRET_WORDS = ("password", "secret", "token", "passwd", "credential", "sasl_plain")


def _looks_secret(option_name: str) -> bool:
    name = option_name.lower()
    return any(word in name for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """Redact a URL string, even one that does not parse."""
    try:
        return BrokerURL.parse(url).redacted()
    except ConfigError:
        return _redact_text(url)


def _redact_text(url: str) -> str:
    # no parsing: anything between "://" and the last "@" may hold a password
    head, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = credentials.partition(":")[0]
    return f"{head}{sep}{user}:{REDACTED}@{host}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in `text` by `***`."""
    for value in secrets:
        if value and len(value) >= 3:
            text = text.replace(value, REDACTED)
            quoted = quote(value, safe="")
            if quoted != value:
                text = text.replace(quoted, REDACTED)
    return text


def parse_options(settings: type[T], query: Mapping[str, str], keywords: Mapping[str, Any]) -> T:
    """Build the options dataclass `settings` from URL query strings and connect() keywords.

    Query values are converted by the field's type (int, float, bool, str, Literal, Optional);
    keyword values must already have that type. Unknown names and bad values raise ConfigError.
    """
    if not dataclasses.is_dataclass(settings):
        raise TypeError(f"{settings!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(settings) if f.init}
    hints = get_type_hints(settings)
    values: dict[str, Any] = {}
    for source, given in (("URL", query), ("keyword", keywords)):
        for name, raw in given.items():
            if name not in fields:
                known = ", ".join(sorted(fields)) or "none"
                raise ConfigError(
                    f"unknown option {name!r} ({source}); this backend knows: {known}"
                )
            shown = REDACTED if _is_secret(fields[name]) else repr(raw)
            try:
                values[name] = _convert(hints[name], raw, from_text=source == "URL")
            except (TypeError, ValueError) as err:
                raise ConfigError(f"option {name!r} = {shown}: {err}") from None
    try:
        return settings(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def secret_values(options: object) -> list[str]:
    """The values of an options dataclass's secret fields."""
    if not dataclasses.is_dataclass(options):
        return []
    return [
        str(getattr(options, f.name))
        for f in dataclasses.fields(options)
        if _is_secret(f) and getattr(options, f.name)
    ]


def _is_secret(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("secret")) or _looks_secret(f.name)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(kind: Any, raw: Any, *, from_text: bool) -> Any:
    origin = get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in get_args(kind) if k is not type(None)]
        if raw is None or (from_text and raw.lower() in ("", "none", "null")):
            return None
        errors = []
        for option in options:
            try:
                return _convert(option, raw, from_text=from_text)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        allowed = get_args(kind)
        if raw not in allowed:
            raise ValueError(f"expected one of {', '.join(map(repr, allowed))}")
        return raw
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if from_text and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ValueError("expected a boolean (true/false)")
    if kind is int:
        if from_text:
            return int(raw)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise TypeError(f"expected int, got {type(raw).__name__}")
    if kind is float:
        if from_text:
            return float(raw)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        raise TypeError(f"expected a number, got {type(raw).__name__}")
    if kind is str:
        if isinstance(raw, str):
            return raw
        raise TypeError(f"expected str, got {type(raw).__name__}")
    if isinstance(raw, kind if isinstance(kind, type) else object):
        return raw
    raise TypeError(f"expected {kind}, got {type(raw).__name__}")
