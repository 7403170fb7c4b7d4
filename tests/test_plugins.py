from __future__ import annotations

import subprocess
import sys

import pytest

import anyqueue


def test_memory_registers_through_the_entry_point() -> None:
    specs = {spec.name: spec for spec in anyqueue.backends()}
    assert specs["memory"].schemes == ("memory",)
    assert specs["memory"].distribution == "anyqueue"


def test_unknown_scheme_names_installed_ones_and_what_to_install() -> None:
    with pytest.raises(anyqueue.BackendNotFound) as raised:
        anyqueue.connect("nats://user:pw@localhost:4222")
    text = str(raised.value)
    assert "nats://" in text and "memory://" in text and "pw" not in text


def test_import_anyqueue_imports_no_broker_client() -> None:
    code = (
        "import sys, anyqueue; anyqueue.backends(); b = anyqueue.connect(); b.close();"
        "heavy = {'pika', 'redis', 'boto3', 'botocore', 'confluent_kafka'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
