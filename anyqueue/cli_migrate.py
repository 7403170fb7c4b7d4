"""`anyqueue migrate`: the command-line face of `anyqueue.migrate.migrate`.

Kept apart from cli.py (registered there with one line) and self-contained, so importing it
first or last makes no difference. Progress goes to stderr, the summary line too (as for the
other commands); `--json` prints the report on stdout. Exit status 1 when anything failed.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click

from .config import BrokerURL, redact_url, scrub
from .errors import ConfigError, Error
from .migrate import MigrationReport, migrate

EXIT_INTERRUPTED = 130


class _ProgressLine:
    """Count, rate and ETA on stderr: redrawn in place on a terminal, a line every
    `every` seconds otherwise (logs of a long `--follow` stay readable)."""

    def __init__(self, stream: IO[str], *, interactive: bool, every: float = 10.0) -> None:
        self.stream = stream
        self.interactive = interactive
        self.every = 0.2 if interactive else every
        self.next_draw = time.monotonic() + (0 if interactive else every)
        self.drawn = False

    def __call__(self, report: MigrationReport) -> None:
        now = time.monotonic()
        if now < self.next_draw:
            return
        self.next_draw = now + self.every
        text = self.render(report)
        if self.interactive:
            self.stream.write("\r\x1b[K" + text)
            self.drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    @staticmethod
    def render(report: MigrationReport) -> str:
        parts = [f"moved {report.moved:,}", f"{report.rate:,.0f} msg/s"]
        if report.skipped:
            parts.append(f"skipped {report.skipped:,}")
        if report.failed:
            parts.append(f"failed {report.failed:,}")
        if report.remaining is not None:
            parts.append(f"~{report.remaining:,} left")
            eta = report.eta
            if eta is not None:
                parts.append(f"ETA {_duration(eta)}")
        return "  ".join(parts)

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT / SIGTERM set `stop` (the batch in flight finishes); a second one aborts at once.
    Only the main thread can install handlers; elsewhere (embedded use) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        name = signal.Signals(signum).name
        click.echo(f"\n{name}: stopping after the batch in flight (again to abort now)", err=True)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _secrets_of(*urls: str) -> list[str]:
    found: list[str] = []
    for url in urls:
        with suppress(ConfigError):
            found += BrokerURL.parse(url).secrets()
    return found


@click.command("migrate")
@click.argument("source_url", metavar="SRC_URL")
@click.argument("destination_url", metavar="DST_URL")
@click.option("--topic", "-t", required=True, help="The topic (or pattern) to drain.")
@click.option("--group", "-g", required=True, help="The group to drain; declared at DST too.")
@click.option("--to-topic", help="Publish to this topic at DST (default: each message's topic).")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Move at most N messages.")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Stop when no message arrived for S seconds (ignored with --follow).",
)
@click.option(
    "--follow", is_flag=True, help="Keep forwarding until SIGINT/SIGTERM (a live shovel)."
)
@click.option("--dry-run", is_flag=True, help="Report what would move; move nothing.")
@click.option(
    "--dedupe",
    is_flag=True,
    help="Journal confirmed ids so a rerun after a crash does not publish them again.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the --dedupe journal lives (default: in ~/.cache/anyqueue/migrate).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=10_000),
    default=100,
    show_default=True,
    help="Messages per publish_batch (and the most published twice after a crash).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def migrate_command(
    source_url: str,
    destination_url: str,
    topic: str,
    group: str,
    to_topic: str | None,
    limit: int | None,
    idle_timeout: float,
    follow: bool,
    dry_run: bool,
    dedupe: bool,
    state_path: Path | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Move the messages of GROUP on TOPIC from SRC_URL to DST_URL without losing any.

    Each batch is published to DST_URL and acked at SRC_URL only once DST_URL accepted it.
    Body, key, headers, id and content type are kept, and the headers anyqueue-migrated-from,
    anyqueue-migrated-topic and anyqueue-migrated-group say where a message came from.
    Killed at any moment, run it again: nothing is lost, at most one batch is published twice
    (with --dedupe, only if the kill hit the publish call itself). Exit status 1 if any
    message failed to move, 130 if interrupted before the source was drained.

    \b
    Examples:
      anyqueue migrate amqp://old-host redis://new-host -t orders -g billing
      anyqueue migrate amqp://old-host redis://new-host -t orders -g billing --dry-run
      anyqueue migrate amqp://old-host redis://new-host -t orders -g billing --follow --dedupe
    """
    ctx = click.get_current_context()
    secrets = _secrets_of(source_url, destination_url)
    for url in (source_url, destination_url):
        if url.startswith("memory:"):
            click.secho(
                "warning: memory:// lives inside this process: only this run sees it",
                fg="yellow",
                err=True,
            )
            break
    display = _ProgressLine(sys.stderr, interactive=sys.stderr.isatty())
    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            if follow:
                click.echo(
                    f"following {redact_url(source_url)} {topic} (group {group}) into "
                    f"{redact_url(destination_url)} {to_topic or topic}; Ctrl-C or SIGTERM "
                    "stops after the batch in flight",
                    err=True,
                )
            report = migrate(
                source_url,
                destination_url,
                topic=topic,
                group=group,
                to_topic=to_topic,
                limit=limit,
                idle_timeout=idle_timeout,
                follow=follow,
                dry_run=dry_run,
                dedupe=dedupe,
                batch_size=batch_size,
                state_path=state_path,
                progress=None if dry_run else display,
                stop=stop,
            )
    except Error as err:
        display.finish()
        click.secho(f"error: {scrub(str(err), secrets)}", fg="red", err=True)
        ctx.exit(1)
    display.finish()
    summary = scrub(report.summary(), secrets)
    click.secho(summary, err=True, fg=None if report.ok else "red")
    if as_json:
        record: dict[str, Any] = report.as_dict()
        click.echo(scrub(json.dumps(record), secrets))
    if not report.ok:
        ctx.exit(1)
    if report.stopped_by == "stop" and not follow:
        ctx.exit(EXIT_INTERRUPTED)
