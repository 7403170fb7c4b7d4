"""sqs:// against moto's SQS and SNS: URLs and credentials, the SNS/SQS topology it builds, lease
extension, temporary queues, FIFO de-duplication, interoperability and error mapping."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest

import anyqueue
from anyqueue_sqs.driver import SQSDriver, whole_seconds
from anyqueue_sqs.plugin import MAX_BODY_BYTES
from anyqueue_sqs.testing import MOTO_KEY_ID, MOTO_SECRET_KEY, sqs_url


@pytest.fixture
def prefix() -> str:
    """A prefix of this test's own, so its queues and topics are its alone."""
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture
def raw(moto_endpoint: str) -> dict[str, Any]:
    """Plain boto3 clients on the same moto server, to look at what the driver built."""
    options = {
        "region_name": "us-east-1",
        "endpoint_url": moto_endpoint,
        "aws_access_key_id": MOTO_KEY_ID,
        "aws_secret_access_key": MOTO_SECRET_KEY,
    }
    return {"sqs": boto3.client("sqs", **options), "sns": boto3.client("sns", **options)}


@pytest.fixture
def broker(moto_endpoint: str, prefix: str) -> Iterator[anyqueue.Broker]:
    with anyqueue.connect(sqs_url(moto_endpoint, prefix=prefix)) as connected:
        yield connected


def queue_names(raw: dict[str, Any], prefix: str) -> list[str]:
    urls = raw["sqs"].list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    return sorted(url.rsplit("/", 1)[1] for url in urls)


def subscriptions(raw: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The SNS subscriptions of this test's topics (every page: the session's shared server
    holds other tests' subscriptions too, and a page has 100)."""
    pages = raw["sns"].get_paginator("list_subscriptions").paginate()
    return [s for page in pages for s in page["Subscriptions"] if f":{prefix}" in s["TopicArn"]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- URLs, options and credentials ---------------------------------------------------------------
def test_secret_key_is_never_shown(moto_endpoint: str, prefix: str) -> None:
    url = f"sqs://{MOTO_KEY_ID}:{MOTO_SECRET_KEY}@us-east-1?endpoint_url={moto_endpoint}"
    with anyqueue.connect(url, prefix=prefix) as broker:
        assert MOTO_SECRET_KEY not in repr(broker) + str(broker) + broker.url
        assert "***" in broker.url
    keyword = anyqueue.connect(
        f"sqs://us-east-1?endpoint_url={moto_endpoint}",
        aws_access_key_id=MOTO_KEY_ID,
        aws_secret_access_key=MOTO_SECRET_KEY,
        prefix=prefix,
    )
    with keyword:
        assert MOTO_SECRET_KEY not in repr(keyword._driver.options)


def test_unreachable_endpoint_is_a_connection_error_without_the_secret() -> None:
    url = (
        f"sqs://{MOTO_KEY_ID}:{MOTO_SECRET_KEY}@us-east-1"
        f"?endpoint_url=http://127.0.0.1:{free_port()}&max_retries=0&connect_timeout=2"
    )
    with pytest.raises(anyqueue.ConnectionError) as raised:
        anyqueue.connect(url)
    assert MOTO_SECRET_KEY not in str(raised.value)
    assert "127.0.0.1" in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqs://us-east-1:4566",  # a port: the endpoint belongs in endpoint_url
        "sqs://us-east-1/queue",
        "sqs://us-east-1?visibility_timeout=0",
        "sqs://us-east-1?prefix=has.dot",
        "sqs://us-east-1?retention_seconds=10",
        "sqs://us-east-1?fifo=maybe",
        "sqs://us-east-1?no_such_option=1",
        "sqs://us-east-1?publish_concurrency=0",
        "sqs://us-east-1?publish_concurrency=9&max_pool_connections=8",
        "sqs://only-key-id@us-east-1",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(anyqueue.ConfigError):
        anyqueue.connect(url)


def test_region_is_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(anyqueue.ConfigError, match="region"):
        anyqueue.connect("sqs://key:secret@?endpoint_url=http://127.0.0.1:9")


def test_capabilities_follow_the_fifo_option(moto_endpoint: str, prefix: str) -> None:
    with anyqueue.connect(sqs_url(moto_endpoint, prefix=prefix, fifo=True)) as fifo:
        assert fifo.capabilities.ordering == "per_key"
        assert fifo.capabilities.duplicate_fraction == 0.0
    with anyqueue.connect(sqs_url(moto_endpoint, prefix=prefix)) as standard:
        assert standard.capabilities.ordering == "none"
        assert standard.capabilities.max_body_bytes == MAX_BODY_BYTES
        with pytest.raises(anyqueue.NotSupported):
            standard.subscribe("logs.*.error")


# -- topology ------------------------------------------------------------------------------------
def test_declare_builds_topic_queue_and_raw_subscription(
    broker: anyqueue.Broker, raw: dict[str, Any], prefix: str
) -> None:
    broker.declare("orders.eu", "billing")
    broker.declare("orders.eu", "billing")  # idempotent
    broker.declare("orders.eu", "audit")
    assert queue_names(raw, prefix) == [
        f"{prefix}-orders_eu__audit",
        f"{prefix}-orders_eu__billing",
    ]
    found = subscriptions(raw, prefix)
    assert len(found) == 2
    assert {s["TopicArn"].rsplit(":", 1)[1] for s in found} == {f"{prefix}-orders_eu"}
    for subscription in found:
        attributes = raw["sns"].get_subscription_attributes(
            SubscriptionArn=subscription["SubscriptionArn"]
        )["Attributes"]
        assert attributes["RawMessageDelivery"] == "true"
    queue_url = raw["sqs"].get_queue_url(QueueName=f"{prefix}-orders_eu__billing")["QueueUrl"]
    queue = raw["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert queue["Attributes"]["MessageRetentionPeriod"] == "1209600"
    assert "sns.amazonaws.com" in queue["Attributes"]["Policy"]


def test_headers_are_native_attributes(
    broker: anyqueue.Broker, raw: dict[str, Any], prefix: str
) -> None:
    broker.declare("t", "g")
    headers = {f"h{i}": str(i) for i in range(12)}
    broker.publish("t", b"x", headers=headers)
    queue_url = raw["sqs"].get_queue_url(QueueName=f"{prefix}-t__g")["QueueUrl"]
    sent = raw["sqs"].receive_message(
        QueueUrl=queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=5
    )["Messages"][0]
    attributes = sent["MessageAttributes"]
    assert len(attributes) == 10  # SNS and SQS carry at most ten
    assert attributes["h0"]["StringValue"] == "0"


def test_messages_from_other_sqs_clients_are_readable(
    broker: anyqueue.Broker, raw: dict[str, Any], prefix: str
) -> None:
    broker.declare("inbound", "g")
    queue_url = raw["sqs"].get_queue_url(QueueName=f"{prefix}-inbound__g")["QueueUrl"]
    sent = raw["sqs"].send_message(
        QueueUrl=queue_url,
        MessageBody="hello from boto3",
        MessageAttributes={"source": {"DataType": "String", "StringValue": "legacy"}},
    )
    with broker.subscribe("inbound", "g") as sub:
        message = sub.receive(timeout=10)
        assert message is not None
        assert (message.body, message.id, message.headers) == (
            b"hello from boto3",
            sent["MessageId"],
            {"source": "legacy"},
        )
        message.ack()


def test_temporary_queues_are_deleted(
    broker: anyqueue.Broker, raw: dict[str, Any], prefix: str
) -> None:
    with broker.subscribe("news") as ephemeral:
        broker.publish("news", b"hi")
        assert ephemeral.receive(timeout=10) is not None
        assert any(name.startswith(f"{prefix}__sub-") for name in queue_names(raw, prefix))
        assert len(subscriptions(raw, prefix)) == 1
    with broker.serve("rpc.echo", lambda m: m.body):
        assert broker.request("rpc.echo", b"ping", timeout=10).body == b"ping"
        assert any(name.startswith(f"{prefix}__reply-") for name in queue_names(raw, prefix))
    broker.close()
    left = queue_names(raw, prefix)
    assert left == [f"{prefix}-rpc_echo__anyqueue_rpc"], "only the durable server group stays"
    assert [s["Endpoint"].rsplit(":", 1)[1] for s in subscriptions(raw, prefix)] == left


def test_publish_batch_respects_the_aggregate_size_limit(broker: anyqueue.Broker) -> None:
    broker.declare("big", "g")
    bodies = [f"{i:03d}".encode() + b"t" * 100_000 for i in range(12)]  # 1.2 MB in all
    ids = broker.publish_batch("big", bodies)
    with broker.subscribe("big", "g", prefetch=12) as sub:
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < len(ids) and time.monotonic() < deadline:
            message = sub.receive(timeout=5)
            if message is not None:
                got[message.id] = message.body
                message.ack()
    assert got == dict(zip(ids, bodies))


class InFlight:
    """Wraps a client's publish_batch: counts the calls in flight at once, can fail one."""

    def __init__(self, publish_batch: Any, fail_call: int | None = None) -> None:
        self._publish_batch = publish_batch
        self._fail_call = fail_call
        self._lock = threading.Lock()
        self.calls = self.now = self.most = 0

    def __call__(self, **request: Any) -> Any:
        with self._lock:
            self.calls += 1
            number = self.calls
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.05)  # a round trip to AWS, long enough for the others to start
            if number == self._fail_call:
                raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://sns")
            return self._publish_batch(**request)
        finally:
            with self._lock:
                self.now -= 1


def watch_publish_calls(
    broker: anyqueue.Broker, topic: str, fail_call: int | None = None
) -> InFlight:
    """Declare `topic`'s group "g" and wrap the connection's SNS publish_batch in an InFlight."""
    broker.declare(topic, "g")
    driver = broker._driver
    assert isinstance(driver, SQSDriver)
    counter = InFlight(driver.sns.publish_batch, fail_call)
    driver.sns.publish_batch = counter
    return counter


def received_bodies(broker: anyqueue.Broker, topic: str, count: int) -> list[bytes]:
    bodies: list[bytes] = []
    with broker.subscribe(topic, "g", prefetch=10) as sub:
        deadline = time.monotonic() + 60
        while len(bodies) < count and time.monotonic() < deadline:
            batch = sub.receive_batch(timeout=2)
            bodies += [message.body for message in batch]
            sub.ack(batch)
        assert sub.receive(timeout=0.5) is None, "nothing more than was published"
    return bodies


def test_standard_topics_publish_batches_concurrently(moto_endpoint: str, prefix: str) -> None:
    url = sqs_url(moto_endpoint, prefix=prefix, publish_concurrency=3)
    with anyqueue.connect(url) as broker:
        counter = watch_publish_calls(broker, "wide")
        bodies = [b"%d" % i for i in range(95)]
        broker.publish_batch("wide", bodies)
        assert (counter.calls, counter.most) == (10, 3)
        assert sorted(received_bodies(broker, "wide", 95)) == sorted(bodies)


def test_fifo_topics_publish_batches_one_after_the_other(moto_endpoint: str, prefix: str) -> None:
    with anyqueue.connect(sqs_url(moto_endpoint, prefix=prefix, fifo=True)) as broker:
        counter = watch_publish_calls(broker, "narrow")
        bodies = [b"%d" % i for i in range(35)]
        broker.publish_batch("narrow", bodies)
        assert (counter.calls, counter.most) == (4, 1)
        assert received_bodies(broker, "narrow", 35) == bodies  # keyless: one order


def test_a_failed_concurrent_batch_fails_the_publish_after_the_others(
    moto_endpoint: str, prefix: str
) -> None:
    with anyqueue.connect(sqs_url(moto_endpoint, prefix=prefix)) as broker:
        counter = watch_publish_calls(broker, "partial", fail_call=2)
        with pytest.raises(anyqueue.ConnectionError):
            broker.publish_batch("partial", [b"%d" % i for i in range(40)])
        assert counter.now == 0, "every call had finished when publish raised"
        # the other three batches were published: at least once, never silently lost
        assert len(received_bodies(broker, "partial", 30)) == 30


def test_oversized_encoding_sends_nothing_of_the_batch(broker: anyqueue.Broker) -> None:
    broker.declare("sizes", "g")
    fits = bytes(MAX_BODY_BYTES)
    with pytest.raises(anyqueue.MessageTooLarge):
        broker.publish_batch(
            "sizes", [b"small", anyqueue.Message(fits, headers={"h": "x" * 20_000})]
        )
    with broker.subscribe("sizes", "g") as sub:
        assert sub.receive(timeout=2) is None


# -- leases --------------------------------------------------------------------------------------
def test_consume_extends_the_visibility_of_a_long_handler(moto_endpoint: str, prefix: str) -> None:
    url = sqs_url(moto_endpoint, prefix=prefix, visibility_timeout=1)
    with anyqueue.connect(url) as broker, anyqueue.connect(url) as other:
        broker.declare("slow", "g")
        broker.publish("slow", b"takes a while")
        deliveries: list[int] = []
        finished = threading.Event()

        def handler(message: anyqueue.Message) -> None:
            deliveries.append(message.delivery_count)
            time.sleep(4)  # four visibility timeouts
            finished.set()

        with broker.consume("slow", handler, group="g", max_deliveries=None):
            with other.subscribe("slow", "g") as competitor:
                stolen = competitor.receive(timeout=6)
            assert finished.wait(30)
        assert stolen is None, "the message came back while its handler was still running"
        assert deliveries == [1]
        with other.subscribe("slow", "g") as after:
            assert after.receive(timeout=2) is None, "acked after the handler returned"


def test_redelivery_after_the_visibility_timeout_without_consume(
    moto_endpoint: str, prefix: str
) -> None:
    url = sqs_url(moto_endpoint, prefix=prefix, visibility_timeout=1)
    with anyqueue.connect(url) as broker:
        broker.declare("held", "g")
        broker.publish("held", b"x")
        with broker.subscribe("held", "g", prefetch=2) as sub:
            first = sub.receive(timeout=10)
            again = sub.receive(timeout=10)
            assert first is not None and again is not None and again.id == first.id
            assert again.delivery_count == 2
            # a superseded receipt: ignored (moto, like SQS, would delete the message with it)
            first.ack()
            third = sub.receive(timeout=10)  # `again` is not settled either: it comes back
            assert third is not None and third.id == first.id and third.delivery_count == 3
            third.ack()


def test_whole_seconds_round_up_within_sqs_limits() -> None:
    assert [whole_seconds(s) for s in (0, 0.01, 1.0, 1.5, 1e9)] == [0, 1, 1, 2, 43_200]


# -- FIFO ----------------------------------------------------------------------------------------
def test_fifo_deduplicates_by_message_id_and_keeps_keyless_order(
    moto_endpoint: str, prefix: str
) -> None:
    with anyqueue.connect(sqs_url(moto_endpoint, prefix=prefix, fifo=True)) as broker:
        broker.declare("jobs", "g")
        first = broker.publish("jobs", b"once", id="job-1")
        again = broker.publish("jobs", b"once", id="job-1")  # a producer's retry
        assert first == again == "job-1"
        ids = broker.publish_batch("jobs", [str(i).encode() for i in range(25)])
        with broker.subscribe("jobs", "g", prefetch=5) as sub:
            got = []
            while len(got) < 26:
                message = sub.receive(timeout=10)
                assert message is not None, f"only {len(got)} arrived"
                got.append(message)
                message.ack()
            assert sub.receive(timeout=2) is None, "the retry was not de-duplicated"
        assert [m.id for m in got] == ["job-1", *ids], "keyless messages keep their order"


# -- errors --------------------------------------------------------------------------------------
def client_error(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "m"}}, "Op")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
            anyqueue.ConnectionError,
        ),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), anyqueue.ConnectionError),
        (botocore.exceptions.NoCredentialsError(), anyqueue.ConfigError),
        (client_error("InvalidClientTokenId"), anyqueue.ConfigError),
        (client_error("ThrottlingException"), anyqueue.ConnectionError),
        (client_error("AWS.SimpleQueueService.NonExistentQueue"), anyqueue.Error),
    ],
)
def test_native_errors_are_classified(
    broker: anyqueue.Broker, error: Exception, expected: type
) -> None:
    driver = broker._driver
    assert isinstance(driver, SQSDriver)
    assert driver.classify_error(error) is expected


def test_a_deleted_queue_surfaces_as_an_anyqueue_error(
    broker: anyqueue.Broker, raw: dict[str, Any], prefix: str
) -> None:
    broker.declare("gone", "g")
    with broker.subscribe("gone", "g") as sub:
        raw["sqs"].delete_queue(
            QueueUrl=raw["sqs"].get_queue_url(QueueName=f"{prefix}-gone__g")["QueueUrl"]
        )
        with pytest.raises(anyqueue.Error) as raised:
            sub.receive(timeout=1)
        assert isinstance(raised.value.__cause__, botocore.exceptions.ClientError)
