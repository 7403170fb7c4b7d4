"""The `anyqueue` command line: in-process with click's CliRunner, and as a real subprocess.

CliRunner runs commands in this process, so `memory://NAME` namespaces are shared between
invocations: a message published by one command can be consumed by the next.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import anyqueue
from anyqueue.cli import cli

PASSWORD = "hunter2-secret"


def invoke(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def url() -> str:
    """A private memory:// namespace for one test."""
    return f"memory://cli-{uuid.uuid4().hex[:8]}"


# -- help and listing --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command", [[], ["backends"], ["publish"], ["consume"], ["bench"], ["conformance"]]
)
def test_help_everywhere(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_backends_lists_memory_with_its_capabilities() -> None:
    result = invoke("backends")
    assert result.exit_code == 0
    assert "memory://" in result.output
    assert "ordering=global" in result.output
    assert "wildcards=yes" in result.output


def test_backends_json() -> None:
    result = invoke("backends", "--json")
    assert result.exit_code == 0
    listing = json.loads(result.output)
    memory = next(b for b in listing["backends"] if b["name"] == "memory")
    assert memory["schemes"] == ["memory"]
    assert memory["distribution"] == "anyqueue"
    assert memory["capabilities"]["ordering"] == "global"
    assert memory["capabilities"]["max_body_bytes"] == 16 * 1024 * 1024
    installed = {scheme for b in listing["backends"] for scheme in b["schemes"]}
    for missing in listing["not_installed"]:
        assert not set(missing["schemes"]) & installed
        assert missing["install"].startswith("pip install 'anyqueue[")


# -- publish and consume -----------------------------------------------------------------------
def test_publish_then_consume_as_json(url: str) -> None:
    published = invoke(
        "publish", url, "orders", "hello", "--group", "billing", "--key", "user-7",
        "-H", "trace=abc", "-H", "odd=a=b c",
    )  # fmt: skip
    assert published.exit_code == 0, published.output
    message_id = published.stdout.strip()
    assert message_id
    assert "published 1 message to orders" in published.stderr

    consumed = invoke("consume", url, "orders", "--group", "billing", "-n", "1", "--json")
    assert consumed.exit_code == 0, consumed.output
    record = json.loads(consumed.stdout)
    assert record["id"] == message_id
    assert record["body"] == "hello"
    assert record["body_encoding"] == "utf-8"
    assert record["key"] == "user-7"
    assert record["headers"] == {"trace": "abc", "odd": "a=b c"}
    assert record["content_type"] == "text/plain"
    assert record["delivery_count"] == 1
    assert "received 1 message" in consumed.stderr


def test_consume_acks_what_it_printed(url: str) -> None:
    invoke("publish", url, "jobs", "one", "-g", "workers")
    assert invoke("consume", url, "jobs", "-g", "workers", "-n", "1").exit_code == 0
    again = invoke("consume", url, "jobs", "-g", "workers", "-n", "1", "--timeout", "0.2")
    assert again.exit_code == 1  # acked: nothing comes back
    assert "0 of 1 messages" in again.stderr


def test_publish_stdin_lines_and_plain_output(url: str) -> None:
    published = invoke("publish", url, "lines", "-", "--lines", "-g", "g", input="a\nb\nc\n")
    assert published.exit_code == 0, published.output
    assert len(published.stdout.split()) == 3
    consumed = invoke("consume", url, "lines", "-g", "g", "-n", "3")
    assert consumed.exit_code == 0
    assert consumed.stdout == "a\nb\nc\n"


def test_binary_stdin_comes_back_as_base64(url: str) -> None:
    body = bytes(range(256))
    invoke("publish", url, "blobs", "-", "-g", "g", input=body)
    consumed = invoke("consume", url, "blobs", "-g", "g", "-n", "1", "--json")
    record = json.loads(consumed.stdout)
    assert record["body_encoding"] == "base64"
    assert base64.b64decode(record["body"]) == body
    assert record["content_type"] == "application/octet-stream"


def test_publish_json_output(url: str) -> None:
    result = invoke("publish", url, "t", "x", "--key", "k", "--json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["topic"] == "t"
    assert record["key"] == "k"
    assert record["id"]


def test_memory_warns_that_it_lives_in_this_process(url: str) -> None:
    result = invoke("publish", url, "t", "x")
    assert "memory:// lives inside this process" in result.stderr


def test_bad_header_is_a_usage_error(url: str) -> None:
    result = invoke("publish", url, "t", "x", "-H", "no-equals-sign")
    assert result.exit_code == 2
    assert "NAME=VALUE" in result.output


def test_lines_needs_stdin(url: str) -> None:
    result = invoke("publish", url, "t", "body", "--lines")
    assert result.exit_code == 2


# -- errors ------------------------------------------------------------------------------------
def test_anyqueue_errors_are_one_line_and_exit_1(url: str) -> None:
    result = invoke("publish", url, "bad name!", "x")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "invalid topic name" in errors[0]
    assert "Traceback" not in result.output


def test_unknown_scheme_names_what_is_installed_and_hides_the_password() -> None:
    result = invoke("publish", f"nosuch://bob:{PASSWORD}@somewhere/0", "t", "x")
    assert result.exit_code == 1
    assert "no backend for nosuch://" in result.stderr
    assert "memory://" in result.stderr
    assert PASSWORD not in result.output


@pytest.mark.parametrize("bad_url", [f"bob:{PASSWORD}@host", f"redis://bob:{PASSWORD}@host:99999"])
def test_malformed_urls_are_usage_errors_without_the_password(bad_url: str) -> None:
    result = invoke("consume", bad_url, "t", "-g", "g")
    assert result.exit_code == 2
    assert "Invalid value for 'URL'" in result.output
    assert PASSWORD not in result.output


def test_unknown_option_in_url_is_a_config_error(url: str) -> None:
    result = invoke("publish", f"{url}?nonsense=1", "t", "x")
    assert result.exit_code == 1
    assert "nonsense" in result.stderr


# -- bench -------------------------------------------------------------------------------------
def test_bench_table_and_json(url: str) -> None:
    table = invoke("bench", url, "--messages", "300", "--requests", "5")
    assert table.exit_code == 0, table.output
    assert "publish/s" in table.stdout
    assert url in table.stdout
    measured = invoke(
        "bench", url, "-m", "200", "-r", "5", "-b", "40", "--format", "json", "--no-baseline"
    )
    assert measured.exit_code == 0
    [record] = json.loads(measured.stdout)
    assert record["url"] == url
    assert record["batch"] == 40
    assert record["anyqueue"]["publish_per_s"] > 0
    assert record["anyqueue"]["combined_per_s"] > 0
    assert record["anyqueue"]["request_p99_ms"] >= record["anyqueue"]["request_p50_ms"] > 0


def test_bench_exits_1_when_a_url_fails(url: str) -> None:
    result = invoke("bench", url, f"nosuch://bob:{PASSWORD}@x", "-m", "100", "-r", "2")
    assert result.exit_code == 1
    assert "failed" in result.stdout  # the table still shows the good URL and the failure
    assert url in result.stdout
    assert PASSWORD not in result.output


# -- conformance -------------------------------------------------------------------------------
def test_conformance_passes_urls_format_and_pytest_args(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], str, list[str]]] = []

    def run_conformance(urls: list[str], *, output_format: str, pytest_args: list[str]) -> int:
        calls.append((urls, output_format, pytest_args))
        return 3

    # stands in for anyqueue_conformance.runner: this test is about the CLI's argument plumbing
    runner = types.ModuleType("anyqueue_conformance.runner")
    runner.run_conformance = run_conformance  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "anyqueue_conformance.runner", runner)
    result = invoke(
        "conformance", "memory://", "memory://b", "--format", "markdown", "--", "-x", "-k", "order"
    )
    assert result.exit_code == 3  # the runner's exit code
    assert calls == [(["memory://", "memory://b"], "markdown", ["-x", "-k", "order"])]


def test_conformance_without_the_suite_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "anyqueue_conformance" else real_find_spec(name, *a),
    )
    result = invoke("conformance", "memory://")
    assert result.exit_code == 1
    assert "pip install 'anyqueue[conformance]'" in result.stderr


# -- a real subprocess -------------------------------------------------------------------------
def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("anyqueue")
    return [str(script)] if script.exists() else [sys.executable, "-m", "anyqueue.cli"]


def test_console_script_runs_in_a_subprocess() -> None:
    listing = subprocess.run(
        [*_console_script(), "backends", "--json"], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    names = [b["name"] for b in json.loads(listing.stdout)["backends"]]
    assert "memory" in names

    version = subprocess.run(
        [*_console_script(), "--version"], capture_output=True, text=True, timeout=60
    )
    assert anyqueue.__version__ in version.stdout


def test_subprocess_error_is_one_red_line_without_traceback() -> None:
    failed = subprocess.run(
        [*_console_script(), "consume", f"nosuch://bob:{PASSWORD}@x", "t", "-g", "g"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: no backend for nosuch://")
    assert len(failed.stderr.strip().splitlines()) == 1
    assert "Traceback" not in failed.stderr
    assert PASSWORD not in failed.stderr + failed.stdout


def test_subprocess_publish_prints_the_id() -> None:
    published = subprocess.run(
        [*_console_script(), "publish", "memory://", "t", "-"],
        input="from stdin",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert published.returncode == 0, published.stderr
    assert len(published.stdout.strip()) >= 16
    assert "published 1 message to t" in published.stderr


def test_ctrl_c_stops_consume_with_status_130() -> None:
    process = subprocess.Popen(
        [*_console_script(), "consume", "memory://", "t", "-g", "g"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # wait until it is consuming (ends early if it dies)
            if line.startswith("consuming t"):
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "received 0 messages from t (group g)" in rest
    assert "Traceback" not in rest


def test_conformance_runs_the_real_suite_in_a_subprocess() -> None:
    pytest.importorskip("anyqueue_conformance.runner")
    result = subprocess.run(
        [*_console_script(), "conformance", "memory://", "--", "-k", "round_trip"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    matrix_row = next(line for line in result.stdout.splitlines() if line.startswith("round_trip"))
    assert "VERIFIED" in matrix_row
