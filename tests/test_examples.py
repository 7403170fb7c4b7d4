"""Every script in examples/ runs as a subprocess and exits 0 on every backend.

The examples check themselves (each exits non-zero when what it shows did not happen), so this
test is only the runner. `backend_name` and the real brokers' session servers come from the
root conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from anyqueue.config import redact_url

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))


#: the RabbitMQ tutorials, the README's tour and a live migration
EXPECTED = {
    "hello_world.py",
    "work_queue.py",
    "publish_subscribe.py",
    "routing.py",
    "topics.py",
    "rpc.py",
    "tour.py",
    "migration.py",
}


def run_example(script: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `script`; fail the test with its output unless it exits 0. Returns its stdout."""
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=EXAMPLES_DIR.parent,
    )
    assert result.returncode == 0, (
        f"{script.name} {' '.join(args)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result.stdout


#: lines an example's output must contain (besides exiting 0)
MUST_SAY = {
    "hello_world.py": ["Received 'Hello World!'"],
    "tour.py": ["Work queue", "Fan-out", "Topic routing", "RPC", "Every step did what it showed."],
    "migration.py": [
        "shovel started",
        "producers switched",
        "Cut-over complete: every order arrived exactly once.",
    ],
}


def test_every_tutorial_has_an_example() -> None:
    assert {path.name for path in EXAMPLES} >= EXPECTED


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(script: Path, backend_name: str, backend_url: Callable[[str], str]) -> None:
    url = backend_url(backend_name)
    output = run_example(script, url)
    assert f"connected to {redact_url(url)}" in output or f"on {redact_url(url)}" in output
    for line in MUST_SAY.get(script.name, []):
        assert line in output


@pytest.mark.parametrize(
    "old, new", [("rabbitmq", "kafka"), ("sqs", "redis")], ids=lambda name: name
)
def test_migration_example_between_two_real_brokers(
    old: str, new: str, backend_url: Callable[[str], str]
) -> None:
    """The cut-over example with a real broker on both sides (the runner above gives it one
    URL, so its new broker is a memory:// namespace there)."""
    old_url, new_url = backend_url(old), backend_url(new)
    output = run_example(EXAMPLES_DIR / "migration.py", old_url, new_url)
    assert f"connected to {redact_url(new_url)}" in output
    for line in MUST_SAY["migration.py"]:
        assert line in output


def test_example_takes_the_url_from_the_environment() -> None:
    env = {**os.environ, "ANYQUEUE_URL": "memory://from-env"}
    output = run_example(EXAMPLES_DIR / "hello_world.py", env=env)
    assert "connected to memory://from-env" in output
    assert "Received 'Hello World!'" in output


def test_a_failing_example_exits_non_zero() -> None:
    # an unknown scheme: the example must report failure through its exit status
    result = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / "hello_world.py"), "nosuchbroker://localhost"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "BackendNotFound" in result.stderr
