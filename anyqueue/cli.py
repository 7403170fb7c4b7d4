"""The `anyqueue` command line: backends, publish, consume, bench, conformance, compare, migrate.

Every command takes broker URLs as arguments (passwords are never echoed). An anyqueue error is
one red line on stderr and exit status 1; progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, NoReturn

import click

from . import bench as bench_module
from . import compare as compare_module
from .broker import connect
from .config import BrokerURL, redact_url, scrub
from .errors import ConfigError, Error
from .message import Message
from .plugins import KNOWN_DISTRIBUTIONS
from .plugins import backends as installed_backends

SECRETS_KEY = "anyqueue.secrets"
PASSTHROUGH_KEY = "anyqueue.passthrough"
EXIT_INTERRUPTED = 130


# -- plumbing ----------------------------------------------------------------------------------
def _fail(ctx: click.Context, message: str, code: int = 1) -> NoReturn:
    """One red line on stderr (secrets of the command's URLs scrubbed), then exit."""
    message = scrub(message, ctx.meta.get(SECRETS_KEY, ()))
    click.secho(f"error: {message}", fg="red", err=True)
    ctx.exit(code)


def _warn(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


class AnyqueueGroup(click.Group):
    """Turns anyqueue errors of any subcommand into one red line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Error as err:
            _fail(ctx, str(err))


class BrokerUrlType(click.types.StringParamType):
    """A broker URL: checked for shape, its secrets remembered so errors never show them."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text: str = super().convert(value, param, ctx)
        try:
            parsed = BrokerURL.parse(text)
        except ConfigError as err:
            if "://" not in text:
                # no scheme to anchor redaction on: do not echo what may be a password
                self.fail("expected SCHEME://..., e.g. memory:// or redis://localhost:6379/0")
            self.fail(str(err), param, ctx)
        if ctx is not None:
            ctx.meta.setdefault(SECRETS_KEY, []).extend(parsed.secrets())
        return text


URL = BrokerUrlType()


def _parse_headers(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", ctx, param)
        headers[name] = value
    return headers


def _warn_if_memory(url: str, what: str) -> None:
    if BrokerURL.parse(url).scheme == "memory":
        _warn(f"memory:// lives inside this process: {what}")


@contextmanager
def _progress(length: int, label: str) -> Iterator[Callable[[str | None, int], None]]:
    """A progress bar on stderr; yields `advance(new_label_or_None, steps)`."""
    with click.progressbar(
        length=max(1, length), label=label, file=sys.stderr, show_pos=True, show_eta=True
    ) as bar:

        def advance(new_label: str | None, steps: int) -> None:
            if new_label is not None:
                bar.label = new_label
            bar.update(steps)

        yield advance


@contextmanager
def _bench_progress(shown_url: str, length: int) -> Iterator[bench_module.Progress]:
    """A progress bar for benchmarking one URL, labelled with the URL and the phase."""
    with _progress(length, f"{shown_url} publish") as advance:

        def progress(phase: str, steps: int) -> None:
            advance(f"{shown_url} {phase}", steps)

        yield progress


# -- the commands ------------------------------------------------------------------------------
@click.group(cls=AnyqueueGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="anyqueue", prog_name="anyqueue")
def cli() -> None:
    """One messaging API over RabbitMQ, Redis, SQS, Kafka and memory://, picked by URL.

    \b
    Examples:
      anyqueue backends
      anyqueue publish redis://localhost:6379/0 orders '{"id": 1}' --group billing
      anyqueue consume redis://localhost:6379/0 orders --group billing -n 1 --json
      anyqueue bench memory:// redis://localhost:6379/0
      anyqueue conformance memory://
      anyqueue compare memory:// redis://localhost:6379/0
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a listing.")
def backends(as_json: bool) -> None:
    """List the installed backend plugins: schemes, distribution and capabilities."""
    specs = installed_backends()
    installed_schemes = {scheme for spec in specs for scheme in spec.schemes}
    missing: dict[str, list[str]] = {}
    for scheme, distribution in KNOWN_DISTRIBUTIONS.items():
        if scheme not in installed_schemes:
            missing.setdefault(distribution, []).append(scheme)
    if as_json:
        records = [
            {
                "name": spec.name,
                "schemes": list(spec.schemes),
                "distribution": spec.distribution,
                "version": _version(spec.distribution),
                "description": spec.description,
                "capabilities": dataclasses.asdict(spec.capabilities),
                "baseline": spec.baseline is not None,
                "harness": spec.harness is not None,
            }
            for spec in specs
        ]
        not_installed = [
            {"schemes": schemes, "install": f"pip install '{distribution}'"}
            for distribution, schemes in missing.items()
        ]
        click.echo(json.dumps({"backends": records, "not_installed": not_installed}, indent=2))
        return
    for spec in specs:
        shown_schemes = ", ".join(f"{scheme}://" for scheme in spec.schemes)
        version = _version(spec.distribution) or "?"
        click.echo(
            f"{click.style(spec.name, bold=True)}  {shown_schemes}  ({spec.distribution} {version})"
        )
        if spec.description:
            click.echo(f"    {spec.description}")
        click.echo(f"    {_describe_capabilities(spec.capabilities)}")
        extras = [
            name
            for name, value in (("baseline", spec.baseline), ("harness", spec.harness))
            if value
        ]
        if extras:
            click.echo(f"    ships: {', '.join(extras)}")
    for distribution, schemes in missing.items():
        listed = ", ".join(f"{scheme}://" for scheme in schemes)
        click.echo(f"not installed: {listed}  (pip install '{distribution}')")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _describe_capabilities(capabilities: Any) -> str:
    parts = []
    for name, value in dataclasses.asdict(capabilities).items():
        if isinstance(value, bool):
            shown = "yes" if value else "no"
        elif name == "max_body_bytes":
            shown = _size(value)
        elif value is None:
            shown = "none"
        else:
            shown = str(value)
        parts.append(f"{name}={shown}")
    return " ".join(parts)


def _size(count: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} B"


@cli.command()
@click.argument("url", type=URL)
@click.argument("topic")
@click.argument("body", required=False)
@click.option("--key", "-k", help="The message key (per-key ordering, partitioning).")
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    callback=_parse_headers,
    help="A header; repeat for more.",
)
@click.option(
    "--group",
    "-g",
    "groups",
    multiple=True,
    help="Declare this durable group on TOPIC first, so the message is kept for it; repeatable.",
)
@click.option(
    "--lines", is_flag=True, help="With BODY '-': publish each line of stdin as one message."
)
@click.option(
    "--content-type", help="Default: text/plain for BODY, application/octet-stream for stdin."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per message.")
def publish(
    url: str,
    topic: str,
    body: str | None,
    key: str | None,
    headers: dict[str, str],
    groups: tuple[str, ...],
    lines: bool,
    content_type: str | None,
    as_json: bool,
) -> None:
    """Publish BODY (or stdin, with '-') to TOPIC at URL; print the message ids.

    A message published while no group exists on its topic reaches nobody (except on brokers
    that replay history): use --group to declare the consumers' group first.

    \b
    Examples:
      anyqueue publish memory:// orders 'hello'
      echo '{"id": 7}' | anyqueue publish redis://localhost orders - --group billing
      cat jobs.txt | anyqueue publish amqp://localhost tasks - --lines -g workers
    """
    if body is None:
        if sys.stdin.isatty():
            raise click.UsageError("give a BODY, or '-' to read it from stdin")
        body = "-"
    if lines and body != "-":
        raise click.UsageError("--lines reads stdin: give '-' as BODY")
    if body == "-":
        data = sys.stdin.buffer.read()
        bodies: list[bytes | str] = list(data.splitlines()) if lines else [data]
        default_type = "application/octet-stream"
    else:
        bodies = [body]
        default_type = "text/plain"
    _warn_if_memory(url, "the message is gone when this command exits")
    messages = [
        Message(
            item,
            key=key,
            headers=dict(headers),
            content_type=content_type or default_type,
        )
        for item in bodies
    ]
    ids: list[str] = []
    with connect(url) as broker:
        for group in groups:
            broker.declare(topic, group)
        if len(messages) > 1000:
            with _progress(len(messages), f"publishing to {topic}") as advance:
                for start in range(0, len(messages), bench_module.BATCH):
                    chunk = messages[start : start + bench_module.BATCH]
                    ids += broker.publish_batch(topic, chunk)
                    advance(None, len(chunk))
        elif messages:
            ids = broker.publish_batch(topic, messages)
    for message_id in ids:
        if as_json:
            click.echo(json.dumps({"id": message_id, "topic": topic, "key": key}))
        else:
            click.echo(message_id)
    noun = "message" if len(ids) == 1 else "messages"
    click.echo(f"published {len(ids)} {noun} to {topic}", err=True)


@cli.command()
@click.argument("url", type=URL)
@click.argument("topic")
@click.option("--group", "-g", required=True, help="The group to consume from (created if new).")
@click.option("-n", "--count", type=click.IntRange(min=1), help="Stop after N messages.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop when no message arrives for S seconds (default: wait for ever).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    help="Most messages held unacked (default: N, at most 100).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per message; body as text, or base64 if not UTF-8.",
)
def consume(
    url: str,
    topic: str,
    group: str,
    count: int | None,
    timeout: float | None,
    prefetch: int | None,
    as_json: bool,
) -> None:
    """Receive messages of GROUP on TOPIC, print them and ack each once printed.

    Without --json each body is written as is, followed by a newline. With -n the exit status
    is 1 if --timeout passes before N messages arrived; Ctrl-C stops (unprinted messages go
    back to the group).
    """
    ctx = click.get_current_context()
    _warn_if_memory(url, "only messages published by this same process can arrive")
    out = sys.stdout.buffer
    received = 0
    interrupted = False
    try:
        with connect(url) as broker:
            subscription = broker.subscribe(
                topic, group, prefetch=prefetch or min(count or 100, 100)
            )
            with subscription:
                click.echo(f"consuming {topic} (group {group}); Ctrl-C stops", err=True)
                while count is None or received < count:
                    message = subscription.receive(timeout=timeout)
                    if message is None:
                        break
                    if not _write(out, _render(message, as_json)):
                        break  # stdout closed (e.g. `| head`): this message goes back
                    message.ack()
                    received += 1
    except KeyboardInterrupt:
        interrupted = True  # closing the subscription returned any unprinted message
    noun = "message" if received == 1 else "messages"
    click.echo(f"received {received} {noun} from {topic} (group {group})", err=True)
    if interrupted:
        ctx.exit(EXIT_INTERRUPTED)
    if count is not None and received < count:
        _fail(ctx, f"timed out after {timeout:g}s with {received} of {count} messages")


def _render(message: Message, as_json: bool) -> bytes:
    if not as_json:
        return message.body + b"\n"
    return (json.dumps(message_record(message), ensure_ascii=False) + "\n").encode()


def message_record(message: Message) -> dict[str, Any]:
    """A received message as a JSON-ready dict (`anyqueue consume --json` prints these)."""
    try:
        body, encoding = message.body.decode(), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(message.body).decode("ascii"), "base64"
    return {
        "topic": message.topic,
        "id": message.id,
        "key": message.key,
        "headers": message.headers,
        "content_type": message.content_type,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "delivery_count": message.delivery_count,
        "redelivered": message.redelivered,
        "body": body,
        "body_encoding": encoding,
    }


def _write(out: IO[bytes], data: bytes) -> bool:
    """Write and flush before the ack; False when the reader went away."""
    try:
        out.write(data)
        out.flush()
    except BrokenPipeError:
        # keep Python from complaining again while flushing stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return False
    return True


@cli.command()
@click.argument("urls", nargs=-1, required=True, type=URL)
@click.option(
    "--messages",
    "-m",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Messages to publish and consume per URL.",
)
@click.option(
    "--body-size",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Bytes per message body.",
)
@click.option(
    "--requests",
    "-r",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Sequential request/reply round trips per URL.",
)
@click.option(
    "--batch",
    "-b",
    type=click.IntRange(min=1),
    default=bench_module.BATCH,
    show_default=True,
    help="Messages per publish_batch call and the subscription's prefetch; the baselines "
    "use it where their client has such a batch.",
)
@click.option("--no-baseline", is_flag=True, help="Skip the backends' raw-client baselines.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def bench(
    urls: tuple[str, ...],
    messages: int,
    body_size: int,
    requests: int,
    batch: int,
    no_baseline: bool,
    output_format: str,
) -> None:
    """Measure publish, consume+ack and request/reply latency at each URL, in this process.

    Each URL gets a fresh topic; where the backend plugin ships a raw-client baseline it runs
    next, and the table shows the ratio anyqueue / baseline. Exit status 1 if a URL failed.
    """
    ctx = click.get_current_context()
    results = []
    for url in urls:
        with _bench_progress(redact_url(url), 2 * messages + requests) as progress:
            results.append(
                bench_module.run(
                    url,
                    messages=messages,
                    body_size=body_size,
                    requests=requests,
                    batch=batch,
                    baseline=not no_baseline,
                    progress=progress,
                )
            )
    if output_format == "json":
        click.echo(bench_module.format_json(results))
    else:
        click.echo(bench_module.format_table(results))
    failed = [result for result in results if result.error]
    if failed:
        _fail(ctx, f"{len(failed)} of {len(results)} URLs failed (see the notes above)")


class _SplitAtDoubleDash(click.Command):
    """Keeps what follows `--` apart (for pytest) instead of merging it into the URLs."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[PASSTHROUGH_KEY] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


@cli.command(cls=_SplitAtDoubleDash)
@click.argument("urls", nargs=-1, required=True, type=URL)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
)
def conformance(urls: tuple[str, ...], output_format: str) -> None:
    """Run the conformance suite against each URL and print the capability matrix.

    Arguments after `--` go to pytest (e.g. `-- -x -k ordering`). Exit status 0 only when
    every capability each backend claims is VERIFIED.
    """
    ctx = click.get_current_context()
    pytest_args: list[str] = ctx.meta.get(PASSTHROUGH_KEY, [])
    if importlib.util.find_spec("anyqueue_conformance") is None:
        _fail(ctx, "the conformance suite is not installed: pip install 'anyqueue[conformance]'")
    try:
        runner = importlib.import_module("anyqueue_conformance.runner")
    except ModuleNotFoundError as err:
        if err.name not in ("anyqueue_conformance.runner", "anyqueue_conformance"):
            raise
        _fail(
            ctx,
            "this anyqueue-conformance has no runner; upgrade it: "
            "pip install -U 'anyqueue[conformance]'",
        )
    code = runner.run_conformance(list(urls), output_format=output_format, pytest_args=pytest_args)
    ctx.exit(int(code))


@cli.command(cls=_SplitAtDoubleDash)
@click.argument("urls", nargs=-1, required=True, type=URL)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "markdown", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--messages",
    "-m",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Messages to publish and consume per URL in the benchmark.",
)
@click.option(
    "--requests",
    "-r",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Sequential request/reply round trips per URL in the benchmark.",
)
@click.option("--no-baseline", is_flag=True, help="Skip the backends' raw-client baselines.")
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiply the conformance suite's message counts.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiply the conformance suite's waits (slow brokers need more).",
)
def compare(
    urls: tuple[str, ...],
    output_format: str,
    messages: int,
    requests: int,
    no_baseline: bool,
    scale: float,
    time_scale: float,
) -> None:
    """Run the conformance suite and the benchmark on each URL; print them side by side.

    One column per URL: the capability matrix (VERIFIED / FAIL / UNCLAIMED / UNVERIFIABLE),
    then the bench figures (and the raw-client baseline with ratios where the backend ships
    one). Arguments after `--` go to pytest. Exit status 1 if a conformance case FAILed or a
    run failed; UNVERIFIABLE cells do not fail it.

    \b
    Examples:
      anyqueue compare memory:// redis://localhost:6379/0
      anyqueue compare amqp://localhost redis://localhost --format markdown -m 2000
    """
    ctx = click.get_current_context()
    comparison = compare_module.compare(
        list(urls),
        messages=messages,
        requests=requests,
        baseline=not no_baseline,
        scale=scale,
        time_scale=time_scale,
        pytest_args=ctx.meta.get(PASSTHROUGH_KEY, []),
        announce=lambda line: click.echo(line, err=True),
        bench_progress=lambda shown: _bench_progress(shown, 2 * messages + requests),
    )
    click.echo(comparison.render(output_format))
    problems = comparison.problems()
    if problems:
        _fail(ctx, "; ".join(problems))


cli.add_command(importlib.import_module("anyqueue.cli_migrate").migrate_command)


def main(argv: Sequence[str] | None = None) -> None:
    """The `anyqueue` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="anyqueue")


if __name__ == "__main__":
    main()
