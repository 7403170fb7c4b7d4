"""Move a group's messages from one broker to another without losing any (`anyqueue migrate`).

Built only on the public Broker API, so it works between any two backends: drain group G of
topic T at the source, publish each batch to the destination with `publish_batch`, and ack at
the source only after the destination accepted the batch. Killed at any moment, a rerun loses
nothing; at most the batch in flight is published twice. With `dedupe`, a small local journal
remembers which ids the destination has confirmed, so a rerun acks those at the source instead
of publishing them again. docs/migration.md states exactly what is and is not guaranteed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .broker import Broker, connect
from .errors import ConfigError, Error
from .message import Message
from .names import is_pattern, matches
from .subscription import Subscription

#: provenance headers added to every migrated message (a later hop overwrites them)
MIGRATED_FROM = "anyqueue-migrated-from"  # the source URL, password redacted
MIGRATED_TOPIC = "anyqueue-migrated-topic"  # the topic the message had at the source
MIGRATED_GROUP = "anyqueue-migrated-group"  # the source group it was drained from

#: how often a waiting migration looks at its stop event and reports progress
POLL_SECONDS = 0.25
#: how long a batch waits for more messages after its first (brokers that push, like RabbitMQ,
#: hand them over a few at a time; fuller batches mean fewer publish round trips)
BATCH_LINGER_SECONDS = 0.05
#: how often the source's depth is asked again for the progress display
DEPTH_REFRESH_SECONDS = 2.0
#: a dry run that has to lease messages to count them holds at most this many
DRY_RUN_MAX_LEASED = 10_000
#: with dedupe, ids published in this run are remembered (newest first) up to this many
RECENT_IDS = 100_000

Progress = Callable[["MigrationReport"], None]


@dataclass
class MigrationReport:
    """What a migration did (or, for a dry run, would do). A live view while it runs.

    moved: messages the destination accepted (then acked at the source, unless `error` says
        that ack failed).
    skipped: messages acked at the source without publishing, because `dedupe` knew the
        destination already had them (an earlier run's confirmed batch, or a redelivery).
    failed: messages left at the source: refused by the destination (too large for it, or the
        batch in flight when the destination failed). They are back in the source group.
    resent: messages of a batch an earlier run was killed while publishing: sent again, so the
        destination may hold them twice (same ids).
    stopped_by: why the run ended: "idle" (no message for `idle_timeout`), "limit", "stop"
        (the stop event, e.g. SIGINT), "error" (see `error`), or "" while it runs.
    """

    source: str
    destination: str
    topic: str
    to_topic: str | None
    group: str
    dry_run: bool = False
    moved: int = 0
    skipped: int = 0
    failed: int = 0
    resent: int = 0
    bytes_moved: int = 0
    #: the source group's depth at the last look (None: the source backend cannot tell)
    remaining: int | None = None
    #: dry run: how many messages a real run would take now, and how they were counted
    would_move: int | None = None
    counted_by: str | None = None
    #: dry run by leasing: more than DRY_RUN_MAX_LEASED (or `limit`) were there
    at_least: bool = False
    stopped_by: str = ""
    error: str | None = None
    elapsed: float = 0.0
    #: seconds from the start until the last batch was forwarded (the rate's denominator, so
    #: the final idle wait does not dilute it)
    moving_seconds: float = 0.0
    state_path: str | None = None

    @property
    def rate(self) -> float:
        """Messages moved per second so far."""
        seconds = self.moving_seconds or self.elapsed
        return self.moved / seconds if seconds > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until the source is drained at the current rate, when its depth is known."""
        if self.remaining is None or self.rate <= 0:
            return None
        return self.remaining / self.rate

    @property
    def ok(self) -> bool:
        """Nothing failed and the run did not stop on an error."""
        return self.failed == 0 and self.error is None

    def summary(self) -> str:
        """One line for people: counts, rate and why it stopped."""
        target = self.to_topic or self.topic
        where = (
            f"from {self.source} {self.topic} (group {self.group}) to {self.destination} {target}"
        )
        if self.dry_run:
            count = f"{self.would_move or 0:,}" + ("+" if self.at_least else "")
            how = (
                "counted by the source's depth; no message touched"
                if self.counted_by == "depth"
                else "counted by leasing them; all returned, delivery counts raised by one"
            )
            line = f"dry run: would move {count} messages {where} ({how})"
            if self.failed:
                line += f"; {self.failed:,} too large for the destination"
            return line
        line = (
            f"moved {self.moved:,} messages {where} in {self.elapsed:.1f}s "
            f"({self.rate:,.0f} msg/s); skipped {self.skipped:,}, failed {self.failed:,}"
        )
        if self.resent:
            line += f", resent {self.resent:,} (may be duplicates)"
        reasons = {"idle": "source idle", "limit": "limit reached", "stop": "stopped"}
        if self.stopped_by in reasons:
            line += f" [{reasons[self.stopped_by]}]"
        if self.error:
            line += f"; error: {self.error}"
        return line

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields plus rate, eta and ok."""
        record = dataclasses.asdict(self)
        record.update(rate=self.rate, eta=self.eta, ok=self.ok)
        return record


def migrate(
    source: str | Broker,
    destination: str | Broker,
    *,
    topic: str,
    group: str,
    to_topic: str | None = None,
    limit: int | None = None,
    idle_timeout: float = 5.0,
    follow: bool = False,
    dry_run: bool = False,
    dedupe: bool = False,
    batch_size: int = 100,
    state_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> MigrationReport:
    """Move the messages of `group` on `topic` from `source` to `destination`.

    `source` / `destination` are URLs (connected and closed here) or Brokers (left open).
    Each message keeps its body, key, headers, id, content type, correlation id and reply-to,
    plus the provenance headers MIGRATED_FROM / MIGRATED_TOPIC / MIGRATED_GROUP. It goes to
    `to_topic` (default: the topic it had, so a pattern source keeps each message's topic),
    where `group` is declared first so nothing published reaches nobody.

    Stops after `limit` messages, when no message arrived for `idle_timeout` seconds, or — with
    `follow`, which ignores the idle timeout — when `stop` is set (the batch in flight is
    finished first). `progress(report)` is called after every batch and about every
    POLL_SECONDS while waiting. A failing destination stops the run with `report.error` set
    (nothing is lost: unacked messages stay at the source); check `report.ok`.

    `dedupe` keeps a journal at `state_path` (default: a file in the user's cache directory
    named after source, destination, topics and group) so a rerun after a crash skips what the
    destination already confirmed. `dry_run` moves nothing: it counts what would move, by the
    source's depth when the backend reports one (no message touched), else by leasing the
    messages and returning them (their delivery counts go up by one).
    """
    _check_arguments(limit, idle_timeout, batch_size, follow, dry_run, dedupe, state_path)
    with contextlib.ExitStack() as connections:
        source_broker = _open(source, connections)
        destination_broker = _open(destination, connections)
        report = MigrationReport(
            source=source_broker.url,
            destination=destination_broker.url,
            topic=topic,
            to_topic=to_topic,
            group=group,
            dry_run=dry_run,
        )
        _refuse_loop(source_broker, destination_broker, topic, to_topic)
        if dry_run:
            _dry_run(source_broker, destination_broker, report, limit, idle_timeout)
            return report
        journal = None
        if dedupe:
            path = Path(state_path) if state_path is not None else None
            journal = Journal.for_migration(report, path)
            connections.enter_context(journal)
            report.state_path = str(journal.path)
        _Migration(
            source_broker,
            destination_broker,
            report,
            limit=limit,
            idle_timeout=idle_timeout,
            follow=follow,
            batch_size=batch_size,
            journal=journal,
            progress=progress,
            stop=stop or threading.Event(),
        ).run()
        return report


def _check_arguments(
    limit: int | None,
    idle_timeout: float,
    batch_size: int,
    follow: bool,
    dry_run: bool,
    dedupe: bool,
    state_path: object,
) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a whole number >= 1 or None, not {limit!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
    if idle_timeout < 0:
        raise ConfigError(f"idle_timeout must be >= 0 seconds, not {idle_timeout!r}")
    if follow and dry_run:
        raise ConfigError("a dry run cannot follow: it reports what is there now")
    if state_path is not None and not dedupe:
        raise ConfigError("state_path is the dedupe journal: it needs dedupe=True")


def _open(target: str | Broker, connections: contextlib.ExitStack) -> Broker:
    if isinstance(target, Broker):
        return target
    return connections.enter_context(connect(target))


def _refuse_loop(source: Broker, destination: Broker, topic: str, to_topic: str | None) -> None:
    """Publishing into the group being drained would move its messages round for ever."""
    if source.url != destination.url:
        return
    target = to_topic or topic
    if target == topic or (is_pattern(topic) and matches(topic, target)):
        raise ConfigError(
            f"source and destination are the same group ({source.url} {topic}): "
            "migrate to another broker or give a to_topic the source topic does not match"
        )


def _depth(broker: Broker, topic: str, group: str) -> int | None:
    """The group's depth if the backend can tell (progress only: errors mean unknown)."""
    try:
        return broker._call(broker._driver.depth, topic, group)
    except Error:
        return None


def _too_large(message: Message, destination: Broker) -> bool:
    return len(message.body) > destination.capabilities.max_body_bytes


def _dry_run(
    source: Broker,
    destination: Broker,
    report: MigrationReport,
    limit: int | None,
    idle_timeout: float,
) -> None:
    started = time.monotonic()
    depth = _depth(source, report.topic, report.group)
    if depth is not None:
        report.remaining = depth
        report.would_move = depth if limit is None else min(depth, limit)
        report.counted_by = "depth"
        report.elapsed = time.monotonic() - started
        return
    # No depth from this backend: lease everything (up to the cap) without settling it, then
    # close, which hands every message back to the group.
    cap = min(limit or DRY_RUN_MAX_LEASED, DRY_RUN_MAX_LEASED)
    seen: set[str] = set()
    too_large = 0
    with source.subscribe(report.topic, report.group, prefetch=cap) as subscription:
        while len(seen) < cap:
            message = subscription.receive(timeout=idle_timeout)
            if message is None:
                break
            if message.id not in seen:
                seen.add(message.id)
                too_large += _too_large(message, destination)
    report.would_move = len(seen) - too_large
    report.at_least = len(seen) >= DRY_RUN_MAX_LEASED and (limit is None or limit > cap)
    report.failed = too_large
    report.counted_by = "leasing"
    report.elapsed = time.monotonic() - started


class _Migration:
    """One run: receive a batch, journal it, publish it, ack it; until idle, limit or stop."""

    def __init__(
        self,
        source: Broker,
        destination: Broker,
        report: MigrationReport,
        *,
        limit: int | None,
        idle_timeout: float,
        follow: bool,
        batch_size: int,
        journal: Journal | None,
        progress: Progress | None,
        stop: threading.Event,
    ) -> None:
        self.source = source
        self.destination = destination
        self.report = report
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.follow = follow
        self.batch_size = min(batch_size, limit) if limit else batch_size
        self.journal = journal
        self.progress = progress
        self.stop = stop
        self.started = time.monotonic()
        self.next_depth_check = 0.0
        # dedupe state: ids an earlier run got confirmed but maybe not acked ("sent"), ids it
        # was publishing when it died ("sending"), and ids this run published
        self.confirmed_earlier: set[str] = set()
        self.interrupted_earlier: set[str] = set()
        self.recent: OrderedDict[str, None] = OrderedDict()
        # messages the destination cannot take: held unsettled so they do not come straight
        # back, returned to the source group when the run ends
        self.refused_ids: set[str] = set()

    def run(self) -> None:
        report = self.report
        if self.journal is not None:
            self.confirmed_earlier, self.interrupted_earlier = self.journal.load()
        self.destination.declare(report.to_topic or report.topic, report.group)
        # room for one batch being collected plus as many refused messages held aside
        prefetch = 2 * self.batch_size
        subscription = self.source.subscribe(report.topic, report.group, prefetch=prefetch)
        try:
            self._tick()
            while not report.stopped_by:
                size = self._room()
                if size == 0:
                    report.stopped_by = "limit"
                    break
                batch = self._collect(subscription, size)
                if batch:
                    self._forward(subscription, batch)
                self._tick()
        finally:
            # unsettled messages (refused ones, a batch the destination failed) go back here
            try:
                subscription.close()
            except Error as err:
                self._fail(f"closing the source subscription failed ({err})")
        self._finish_journal()
        self.next_depth_check = 0.0  # the final report shows what is left now
        self._tick()

    def _room(self) -> int:
        if self.limit is None:
            return self.batch_size
        return min(self.batch_size, self.limit - self.report.moved - self.report.skipped)

    # -- receiving ---------------------------------------------------------------------------
    def _collect(self, subscription: Subscription, size: int) -> list[Message]:
        """Wait for a first message (until idle or stopped), then for more up to `size` during
        BATCH_LINGER_SECONDS. A failing source ends the run; what was leased goes back to it."""
        batch: list[Message] = []
        try:
            first = self._wait_first(subscription)
            if first is None:
                return []
            batch.append(first)
            linger_until = time.monotonic() + BATCH_LINGER_SECONDS
            while len(batch) < size:
                message = subscription.receive(timeout=max(0.0, linger_until - time.monotonic()))
                if message is None:
                    break
                batch.append(message)
        except Error as err:
            self._fail(f"receiving from the source failed ({err}); nothing of it was published")
            return []
        return batch

    def _wait_first(self, subscription: Subscription) -> Message | None:
        idle_deadline = None if self.follow else time.monotonic() + self.idle_timeout
        while True:
            if self.stop.is_set():
                self.report.stopped_by = "stop"
                return None
            wait = POLL_SECONDS
            if idle_deadline is not None:
                wait = min(wait, max(0.0, idle_deadline - time.monotonic()))
            message = subscription.receive(timeout=wait)
            if message is not None:
                return message
            if idle_deadline is not None and time.monotonic() >= idle_deadline:
                self.report.stopped_by = "idle"
                return None
            self._tick()

    # -- forwarding --------------------------------------------------------------------------
    def _forward(self, subscription: Subscription, batch: list[Message]) -> None:
        report = self.report
        dedupe = self.journal is not None
        publish: list[Message] = []
        known: list[Message] = []
        batch_ids: set[str] = set()
        for message in batch:
            if dedupe and (
                message.id in self.confirmed_earlier
                or message.id in self.recent
                or message.id in batch_ids
            ):
                known.append(message)
            elif _too_large(message, self.destination):
                self._refuse(message)
            else:
                publish.append(message)
                batch_ids.add(message.id)
        if self.journal is not None and publish:
            self.journal.write(sending=[m.id for m in publish], sent=self.confirmed_earlier)
        accepted = self._publish(publish)
        if self.journal is not None and accepted:
            accepted_ids = {m.id for m in accepted}
            self.journal.write(
                sending=[m.id for m in publish if m.id not in accepted_ids],
                sent=self.confirmed_earlier | accepted_ids,
            )
        settled = self._ack(subscription, accepted + known)
        report.moved += len(accepted)
        report.bytes_moved += sum(len(m.body) for m in accepted)
        report.resent += sum(m.id in self.interrupted_earlier for m in accepted)
        if settled:
            report.skipped += len(known)
            self.confirmed_earlier.difference_update(m.id for m in known)
        if dedupe:
            self._remember(accepted)
        report.moving_seconds = time.monotonic() - self.started
        if len(self.refused_ids) >= self.batch_size:
            self._fail(
                f"{len(self.refused_ids)} messages are too large for {self.destination.url} "
                f"(over {self.destination.capabilities.max_body_bytes} bytes); they stay at "
                "the source"
            )

    def _fail(self, error: str) -> None:
        """Stop the run on its first error (later ones follow from it)."""
        if self.report.error is None:
            self.report.error = error
        self.report.stopped_by = "error"

    def _refuse(self, message: Message) -> None:
        if message.id not in self.refused_ids:
            self.refused_ids.add(message.id)
            self.report.failed += 1

    def _publish(self, messages: list[Message]) -> list[Message]:
        """Publish in order, one publish_batch per run of the same target topic; return the
        messages the destination accepted. On failure the rest stay at the source."""
        accepted: list[Message] = []
        for target, run in _runs_by_target(messages, self.report.to_topic):
            try:
                self.destination.publish_batch(target, [self._outgoing(m) for m in run])
            except Error as err:
                not_sent = len(messages) - len(accepted)
                self.report.failed += not_sent
                self._fail(
                    f"the destination refused a batch ({err}); its {not_sent} messages stay "
                    "at the source: run again to resume"
                )
                break
            accepted += run
        return accepted

    def _outgoing(self, message: Message) -> Message:
        headers = dict(message.headers)
        headers[MIGRATED_FROM] = self.source.url
        headers[MIGRATED_TOPIC] = message.topic or self.report.topic
        headers[MIGRATED_GROUP] = self.report.group
        return Message(
            message.body,
            key=message.key,
            headers=headers,
            id=message.id,
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
        )

    def _ack(self, subscription: Subscription, messages: list[Message]) -> bool:
        """Ack at the source, flushing batched acks so they are really sent; False on error."""
        try:
            for message in messages:
                message.ack()
            subscription._flush_acks()
        except Error as err:
            self._fail(
                f"acking at the source failed ({err}); the destination already has the last "
                "batch, so a rerun publishes it again unless run with dedupe"
            )
            return False
        return True

    def _remember(self, published: Sequence[Message]) -> None:
        for message in published:
            self.recent[message.id] = None
        while len(self.recent) > RECENT_IDS:
            self.recent.popitem(last=False)

    # -- bookkeeping -------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        self.report.elapsed = now - self.started
        if now >= self.next_depth_check:
            self.next_depth_check = now + DEPTH_REFRESH_SECONDS
            self.report.remaining = _depth(self.source, self.report.topic, self.report.group)
        if self.progress is not None:
            self.progress(self.report)

    def _finish_journal(self) -> None:
        """The last batch is acked. A run that drained the source (idle) removes the journal:
        ids of an earlier run not seen again had their acks go through. A run stopped early
        keeps those ids, since their messages may still come back."""
        if self.journal is None or self.report.stopped_by == "error":
            return  # keep what it says: the rerun needs it
        if self.confirmed_earlier and self.report.stopped_by != "idle":
            self.journal.write(sending=[], sent=self.confirmed_earlier)
        else:
            self.journal.remove()


def _runs_by_target(
    messages: list[Message], to_topic: str | None
) -> Iterator[tuple[str, list[Message]]]:
    """Consecutive messages with the same destination topic, in order."""
    run: list[Message] = []
    target = ""
    for message in messages:
        message_target = to_topic or message.topic
        if run and message_target != target:
            yield target, run
            run = []
        target = message_target
        run.append(message)
    if run:
        yield target, run


# -- the dedupe journal ----------------------------------------------------------------------
class Journal:
    """The dedupe journal of one migration: a small JSON file, replaced atomically.

    `sending`: ids of the batch being published (unknown whether the destination got them).
    `sent`: ids the destination confirmed whose acks at the source may not have happened.
    A rerun acks `sent` ids without publishing them and publishes `sending` ids again. The
    journal only ever names ids the destination confirmed as `sent`, so a stale or lost journal
    can cause duplicates but never a loss. A lock file keeps two runs from sharing it.
    """

    VERSION = 1

    def __init__(self, path: Path, identity: dict[str, str | None]) -> None:
        self.path = path
        self.identity = identity
        self._lock_file: IO[bytes] | None = None

    @classmethod
    def for_migration(cls, report: MigrationReport, path: Path | None = None) -> Journal:
        identity = {
            "source": report.source,
            "destination": report.destination,
            "topic": report.topic,
            "to_topic": report.to_topic,
            "group": report.group,
        }
        default = default_state_path(
            source=report.source,
            destination=report.destination,
            topic=report.topic,
            to_topic=report.to_topic,
            group=report.group,
        )
        return cls(path or default, identity)

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.path.with_name(self.path.name + ".lock"), "wb")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, a second run could race on the file
            pass
        else:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_file.close()
                raise ConfigError(
                    f"another migration is using the state file {self.path}"
                ) from None
        self._lock_file = lock_file
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the lock
            self._lock_file = None

    def load(self) -> tuple[set[str], set[str]]:
        """(sent, sending) ids recorded by an earlier run; empty if there is no journal."""
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError:
            return set(), set()
        except (OSError, ValueError) as err:
            # unreadable (e.g. a torn write after a power cut): forgetting it can only cause
            # duplicates, never a loss
            raise ConfigError(
                f"cannot read the state file {self.path} ({err}); delete it to go on "
                "(the last batch may then be published twice)"
            ) from None
        if record.get("migration") != self.identity:
            raise ConfigError(
                f"the state file {self.path} belongs to another migration "
                f"({record.get('migration')}); give another --state path"
            )
        return set(record.get("sent", ())), set(record.get("sending", ()))

    def write(self, *, sending: Sequence[str], sent: set[str] | Sequence[str]) -> None:
        """Replace the journal (write a temporary file, then rename it over the old one)."""
        record = {
            "version": self.VERSION,
            "migration": self.identity,
            "sending": list(sending),
            "sent": sorted(sent),
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def default_state_path(
    *, source: str, destination: str, topic: str, to_topic: str | None, group: str
) -> Path:
    """Where the dedupe journal of a migration lives unless told: the user's cache directory,
    a file named after topic and group plus a digest of everything that identifies the run
    (URLs are the redacted ones, so no password ends up in a file name)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    identity = json.dumps([source, destination, topic, to_topic, group])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", f"{topic}--{group}")[:80]
    return Path(cache) / "anyqueue" / "migrate" / f"{readable}--{digest}.json"
