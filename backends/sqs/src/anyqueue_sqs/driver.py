"""`sqs://` — Amazon SQS through boto3: a group is an SQS queue, a topic an SNS topic feeding them.

URL: `sqs://REGION[?option=value...]`, e.g. `sqs://us-east-1`, or against a local endpoint
`sqs://KEY_ID:SECRET@us-east-1?endpoint_url=http://127.0.0.1:4566`. Credentials come from the
URL, the `aws_*` options or boto3's usual chain (environment, profile, instance role); the secret
key is never shown. Options: `endpoint_url`, `fifo`, `prefix`, `visibility_timeout`,
`retention_seconds`, `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`,
`profile`, `max_retries`, `connect_timeout`, `max_pool_connections`, `publish_concurrency`.

| feature             | sqs://                                                              |
|---------------------|---------------------------------------------------------------------|
| ordering            | none; `?fifo=true`: per key (MessageGroupId), de-duplicated by id    |
| durable             | yes (SQS stores messages redundantly; cannot be shown on moto)       |
| fan-out             | one SNS topic per topic, each group's queue subscribed (raw delivery)|
| ack / nack          | DeleteMessageBatch / ChangeMessageVisibilityBatch (0 or the delay)   |
| ack timeout         | yes: the visibility timeout; `consume` extends it while handling    |
| nack(delay)         | yes, up to 12 hours (whole seconds, rounded up)                      |
| delivery_count      | ApproximateReceiveCount                                              |
| wildcards `*` `#`   | no (SNS has no pattern subscriptions): NotSupported                  |
| max body            | 192,000 bytes (256 KiB message, binary bodies base64-encoded)        |
| request/reply       | a temporary reply queue per connection, deleted on close             |

Receives long-poll (WaitTimeSeconds) and take up to 10 messages; publishes go out in
PublishBatch calls of up to 10 (on standard topics up to `publish_concurrency` calls at once);
acks are batched by the core in tens. The naming of queues and
topics is in `naming.py`, the wire format in `codec.py`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from anyqueue.capabilities import Capabilities
from anyqueue.config import BrokerURL, secret
from anyqueue.driver import Driver, Inbox, SubscriptionDriver
from anyqueue.errors import Closed, ConfigError, ConnectionError, Error
from anyqueue.message import Message

from . import codec, naming
from .plugin import MAX_VISIBILITY_SECONDS, capabilities_for

log = logging.getLogger("anyqueue.sqs")

#: SQS and SNS take at most 10 entries per batch call and 10 messages per receive
BATCH_LIMIT = 10
#: the longest long poll SQS allows
MAX_WAIT_SECONDS = 20
#: 14 days, the longest SQS keeps a message: a group keeps its messages while nobody reads
MAX_RETENTION_SECONDS = 1_209_600
#: temporary queues (ephemeral groups, reply inboxes) keep messages this long if a crashed
#: client leaves one behind
TEMPORARY_RETENTION_SECONDS = 3_600
#: batch entries failing with these codes refer to receipts that are no longer valid: the
#: message was deleted, returned or handed to someone else meanwhile
_STALE_RECEIPT_CODES = frozenset(
    {"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"}
)
_NO_SUCH_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NotFound"}
)
_CREDENTIAL_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "KMSThrottling",
    }
)
#: FIFO group and de-duplication ids: 1-128 printable ASCII characters
_FIFO_ID_CHARACTERS = frozenset(chr(c) for c in range(33, 127))
#: keyless messages on a FIFO topic share one message group, so they keep their order too
KEYLESS_GROUP = "anyqueue.no-key"


@dataclass(frozen=True)
class SQSOptions:
    """Query parameters / keyword options of `sqs://` URLs."""

    #: another endpoint than AWS's for both SQS and SNS (LocalStack, moto, ElasticMQ+SNS)
    endpoint_url: str | None = None
    #: FIFO topics and queues: per-key order (MessageGroupId) and de-duplication by message id
    fifo: bool = False
    #: the first part of every queue and topic name this connection creates or uses
    prefix: str = "aq"
    #: the lease of a received message when subscribe() got no ack_timeout (consume workers
    #: extend it while their handler runs); rounded up to whole seconds
    visibility_timeout: float = 30.0
    #: how long a group's queue keeps unread messages (SQS: 60 s to 14 days)
    retention_seconds: int = MAX_RETENTION_SECONDS
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = secret()
    aws_session_token: str | None = secret()
    #: a named profile of the AWS config files
    profile: str | None = None
    #: botocore's retries of throttled or failed calls ("standard" mode)
    max_retries: int = 3
    connect_timeout: float = 5.0
    #: HTTP connections per client, shared by all threads using this connection
    max_pool_connections: int = 32
    #: PublishBatch calls one connection has in flight at once on standard topics (FIFO topics
    #: publish one batch after the other, to keep each key's order)
    publish_concurrency: int = 4

    def __post_init__(self) -> None:
        if not naming.PREFIX_PATTERN.fullmatch(self.prefix):
            raise ConfigError(
                f"prefix {self.prefix!r}: use up to 20 characters from A-Z a-z 0-9 _ -"
            )
        if not 0 < self.visibility_timeout <= MAX_VISIBILITY_SECONDS:
            raise ConfigError(
                f"visibility_timeout must be > 0 and <= {MAX_VISIBILITY_SECONDS} seconds"
            )
        if not 60 <= self.retention_seconds <= MAX_RETENTION_SECONDS:
            raise ConfigError(
                f"retention_seconds must be between 60 and {MAX_RETENTION_SECONDS} (14 days)"
            )
        if self.max_retries < 0 or self.connect_timeout <= 0 or self.max_pool_connections < 1:
            raise ConfigError(
                "max_retries must be >= 0, connect_timeout > 0 and max_pool_connections >= 1"
            )
        if not 1 <= self.publish_concurrency <= self.max_pool_connections:
            raise ConfigError(
                f"publish_concurrency must be between 1 and max_pool_connections "
                f"({self.max_pool_connections}), not {self.publish_concurrency}"
            )


def whole_seconds(seconds: float) -> int:
    """A duration as SQS takes it: whole seconds, rounded up so a lease or delay is never
    shorter than asked, within SQS's 0..12 hours."""
    return max(0, min(MAX_VISIBILITY_SECONDS, math.ceil(seconds)))


def open_clients(url: BrokerURL, options: SQSOptions) -> tuple[Any, Any]:
    """The boto3 SQS and SNS clients for a parsed `sqs://` URL (also used by the benchmark)."""
    if url.port is not None or url.path not in ("", "/"):
        raise ConfigError(
            f"SQS URLs are sqs://REGION?endpoint_url=..., not {url.redacted()!r}: put a custom "
            "endpoint in the endpoint_url option"
        )
    key_id = url.username or options.aws_access_key_id
    secret_key = url.password or options.aws_secret_access_key
    if bool(key_id) != bool(secret_key):
        raise ConfigError("give both an access key id and a secret access key, or neither")
    session = boto3.session.Session(
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret_key or None,
        aws_session_token=options.aws_session_token or None,
        region_name=url.host or None,
        profile_name=options.profile or None,
    )
    if not session.region_name:
        raise ConfigError(
            "no AWS region: write it as the URL's host (sqs://us-east-1) or set AWS_DEFAULT_REGION"
        )
    config = botocore.config.Config(
        retries={"max_attempts": options.max_retries + 1, "mode": "standard"},
        connect_timeout=options.connect_timeout,
        # longer than the longest long poll, so a waiting receive is never cut short
        read_timeout=MAX_WAIT_SECONDS + 10,
        max_pool_connections=options.max_pool_connections,
    )
    clients = [
        session.client(service, endpoint_url=options.endpoint_url or None, config=config)
        for service in ("sqs", "sns")
    ]
    return clients[0], clients[1]


class _Lease:
    """The receipt of one delivery: SQS's handle, tied to the subscription that holds it."""

    __slots__ = ("handle", "message_id")

    def __init__(self, message_id: str, handle: str) -> None:
        self.message_id = message_id
        self.handle = handle


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SQSSubscription(SubscriptionDriver):
    """One consumer of one queue. It remembers the receipts it holds, so that an ack or nack
    for a delivery it no longer holds (closed, lease expired and received again, dropped
    connection) is ignored instead of touching someone else's delivery."""

    ack_batch_size = BATCH_LIMIT

    def __init__(
        self,
        driver: SQSDriver,
        *,
        queue_url: str,
        topic: str,
        lease: float,
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        self._driver = driver
        self._sqs = driver.sqs
        self.queue_url = queue_url
        self._topic = topic
        self._visibility = max(1, whole_seconds(lease))
        self.lease_seconds = driver.options.visibility_timeout
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._held: dict[str, _Lease] = {}  # SQS MessageId -> the lease this subscription holds
        self._closing = False
        self._closed = threading.Event()

    # -- receiving -----------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        if self._closed.is_set():
            return []
        started = time.monotonic()
        wait = int(min(max(timeout, 0.0), MAX_WAIT_SECONDS))  # SQS waits in whole seconds
        try:
            response = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(BATCH_LIMIT, max_messages)),
                WaitTimeSeconds=wait,
                VisibilityTimeout=self._visibility,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except Exception:
            if self._closed.is_set():
                return []  # e.g. our temporary queue was deleted by close() meanwhile
            raise
        raw: list[dict[str, Any]] = response.get("Messages") or []
        if not raw:
            if wait == 0:
                # a short poll answers at once: sleep out the sub-second rest (close wakes us)
                self._closed.wait(max(0.0, timeout - (time.monotonic() - started)))
            return []
        messages = [self._decode(item) for item in raw]
        with self._lock:
            if not self._closing:
                for message in messages:
                    lease: _Lease = message.receipt
                    self._held[lease.message_id] = lease
                return messages
        # closed while the poll was under way: these go straight back to the queue
        self._change_visibility([m.receipt for m in messages], 0, ignore_all_failures=True)
        return []

    def _decode(self, item: dict[str, Any]) -> Message:
        try:
            message = codec.decode(item, self._topic)
        except Error as err:
            log.warning(
                "anyqueue: SQS message %s: %s; delivered as raw text", item["MessageId"], err
            )
            item = {key: value for key, value in item.items() if key != "MessageAttributes"}
            message = codec.decode(item, self._topic)
        message.receipt = _Lease(item["MessageId"], item["ReceiptHandle"])
        return message

    # -- settling ------------------------------------------------------------------------------
    def _take(self, messages: Sequence[Message], *, keep: bool = False) -> list[_Lease]:
        """The leases of `messages` this subscription still holds (removed unless `keep`)."""
        taken = []
        with self._lock:
            for message in messages:
                lease = message.receipt
                if isinstance(lease, _Lease) and self._held.get(lease.message_id) is lease:
                    taken.append(lease)
                    if not keep:
                        del self._held[lease.message_id]
        return taken

    def ack(self, messages: Sequence[Message]) -> None:
        leases = self._take(messages)
        for chunk in _chunks(leases, BATCH_LIMIT):
            response = self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": lease.handle} for i, lease in enumerate(chunk)
                ],
            )
            self._check_failures("DeleteMessageBatch", response)

    def nack(self, messages: Sequence[Message], delay: float | None) -> None:
        self._change_visibility(self._take(messages), whole_seconds(delay or 0))

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        leases = self._take(messages, keep=True)
        self._change_visibility(leases, max(1, whole_seconds(seconds)))

    def _change_visibility(
        self, leases: Sequence[_Lease], seconds: int, *, ignore_all_failures: bool = False
    ) -> None:
        for chunk in _chunks(leases, BATCH_LIMIT):
            response = self._sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": lease.handle, "VisibilityTimeout": seconds}
                    for i, lease in enumerate(chunk)
                ],
            )
            if not ignore_all_failures:
                self._check_failures("ChangeMessageVisibilityBatch", response)

    @staticmethod
    def _check_failures(operation: str, response: dict[str, Any]) -> None:
        failed = [
            entry
            for entry in response.get("Failed") or []
            if entry.get("Code") not in _STALE_RECEIPT_CODES
        ]
        if failed:
            first = failed[0]
            raise Error(
                f"SQS {operation}: {len(failed)} entries failed, e.g. "
                f"{first.get('Code')}: {first.get('Message')}"
            )

    # -- lifecycle -----------------------------------------------------------------------------
    def forget_leases(self) -> None:
        """As after a dropped connection: the held deliveries are abandoned, later acks and
        nacks for them are discarded, and SQS hands them out again when their visibility
        timeout runs out."""
        with self._lock:
            self._held.clear()

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            leases = list(self._held.values())
            self._held.clear()
        self._closed.set()
        try:
            if leases and self._cleanup is None:
                self._change_visibility(leases, 0, ignore_all_failures=True)
            if self._cleanup is not None:
                self._cleanup()
        finally:
            self._driver._forget(self)


class SQSDriver(Driver):
    """A connection to SQS and SNS in one region (or at one endpoint)."""

    Options = SQSOptions

    def __init__(self, url: BrokerURL, options: SQSOptions) -> None:
        super().__init__(url, options)
        self.options: SQSOptions = options
        self._fifo = options.fifo
        self._prefix = options.prefix
        self._lock = threading.Lock()
        self._topic_arns: dict[str, str] = {}
        self._queue_urls: dict[tuple[str, str], str] = {}
        self._subscriptions: set[SQSSubscription] = set()
        self._publishers: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        try:
            self.sqs, self.sns = open_clients(url, options)
            # fail fast on a wrong endpoint or credentials instead of at the first publish
            self.sqs.list_queues(QueueNamePrefix=self._prefix or "a", MaxResults=1)
        except Error:
            raise
        except Exception as err:
            where = options.endpoint_url or f"region {url.host or 'from the environment'}"
            raise self.classify_error(err)(f"cannot reach SQS at {where}: {err}") from err

    @property
    def capabilities(self) -> Capabilities:
        return capabilities_for(fifo=self._fifo)

    # -- topics and groups -----------------------------------------------------------------
    def _topic_arn(self, topic: str) -> str:
        arn = self._topic_arns.get(topic)
        if arn is None:
            attributes = (
                {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if self._fifo else {}
            )
            name = naming.topic_name(self._prefix, topic, fifo=self._fifo)
            arn = self.sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
            self._topic_arns[topic] = arn
        return arn

    def _queue_attributes(
        self, queue_arn: str, topic_arn: str | None, retention: int
    ) -> dict[str, str]:
        attributes = {"MessageRetentionPeriod": str(retention)}
        if self._fifo and topic_arn is not None:
            attributes["FifoQueue"] = "true"
            attributes["ContentBasedDeduplication"] = "false"
        if topic_arn is not None:
            # SNS may deliver into this queue only from the topic it belongs to
            attributes["Policy"] = json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "anyqueue-topic",
                            "Effect": "Allow",
                            "Principal": {"Service": "sns.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": queue_arn,
                            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                        }
                    ],
                },
                separators=(",", ":"),
            )
        return attributes

    def _create_queue(self, name: str, attributes: dict[str, str]) -> str:
        try:
            return str(self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        except botocore.exceptions.ClientError as err:
            if _code(err) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
        # the queue exists with other attributes (e.g. made by an older version): adopt it
        url = str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
        self.sqs.set_queue_attributes(
            QueueUrl=url, Attributes={k: v for k, v in attributes.items() if k != "FifoQueue"}
        )
        return url

    def _subscribed_queue(self, topic: str, name: str, retention: int) -> tuple[str, str]:
        """Create queue `name` fed by `topic`'s SNS topic; return its URL and subscription."""
        topic_arn = self._topic_arn(topic)
        # same partition, region and account as the topic: arn:PARTITION:sns:REGION:ACCOUNT:NAME
        _, partition, _, region, account, _ = topic_arn.split(":", 5)
        queue_arn = f"arn:{partition}:sqs:{region}:{account}:{name}"
        queue_url = self._create_queue(
            name, self._queue_attributes(queue_arn, topic_arn, retention)
        )
        subscription = self.sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )
        return queue_url, str(subscription["SubscriptionArn"])

    def _group_queue(self, topic: str, group: str) -> str:
        url = self._queue_urls.get((topic, group))
        if url is None:
            name = naming.queue_name(self._prefix, topic, group, fifo=self._fifo)
            url, _ = self._subscribed_queue(topic, name, self.options.retention_seconds)
            self._queue_urls[(topic, group)] = url
        return url

    def declare(self, topic: str, group: str) -> None:
        self._group_queue(topic, group)

    # -- publishing --------------------------------------------------------------------------
    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        """PublishBatch calls of up to 10 messages. On a standard topic up to
        `publish_concurrency` of them are in flight at once (a batch costs a round trip, and
        standard queues promise no order); on a FIFO topic one after the other, so that each
        key's messages arrive in the order given. Returns once every call succeeded; if one
        failed, raises its error after the others finished (some messages may be published)."""
        # encode (and size-check) everything before anything is sent
        encoded = [codec.encode(message) for message in messages]
        topic_arn = self._topic_arn(topic)
        batches = list(self._batches(messages, encoded))
        if self._fifo or len(batches) == 1 or self.options.publish_concurrency == 1:
            for batch in batches:
                self._publish_batch(topic, topic_arn, batch)
            return
        pool = self._publisher_pool()
        calls = [pool.submit(self._publish_batch, topic, topic_arn, batch) for batch in batches]
        concurrent.futures.wait(calls)
        for call in calls:
            call.result()  # the first failure, in the order given

    def _publish_batch(
        self, topic: str, topic_arn: str, batch: list[tuple[Message, codec.Encoded]]
    ) -> None:
        entries = [self._entry(str(i), message, form) for i, (message, form) in enumerate(batch)]
        response = self.sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
        failed = response.get("Failed") or []
        if failed:
            first = failed[0]
            raise Error(
                f"SNS refused {len(failed)} of {len(entries)} messages for {topic!r}, e.g. "
                f"{first.get('Code')}: {first.get('Message')}"
            )

    def _publisher_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise Closed("the SQS connection is closed")
            if self._publishers is None:
                self._publishers = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.options.publish_concurrency,
                    thread_name_prefix="anyqueue-sqs-publish",
                )
            return self._publishers

    @staticmethod
    def _batches(
        messages: Sequence[Message], encoded: Sequence[codec.Encoded]
    ) -> Iterator[list[tuple[Message, codec.Encoded]]]:
        """Up to 10 messages per call, and at most 256 KiB per call in total (SNS's limits)."""
        batch: list[tuple[Message, codec.Encoded]] = []
        size = 0
        for message, form in zip(messages, encoded):
            if batch and (len(batch) == BATCH_LIMIT or size + form.size > codec.MAX_MESSAGE_BYTES):
                yield batch
                batch, size = [], 0
            batch.append((message, form))
            size += form.size
        if batch:
            yield batch

    def _entry(self, entry_id: str, message: Message, form: codec.Encoded) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Id": entry_id,
            "Message": form.body,
            "MessageAttributes": form.attributes,
        }
        if self._fifo:
            entry["MessageGroupId"] = (
                _fifo_id(message.key) if message.key is not None else KEYLESS_GROUP
            )
            entry["MessageDeduplicationId"] = _fifo_id(message.id)
        return entry

    # -- consuming ---------------------------------------------------------------------------
    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, ack_timeout: float | None
    ) -> SQSSubscription:
        lease = ack_timeout if ack_timeout is not None else self.options.visibility_timeout
        if group is not None:
            queue_url = self._group_queue(topic, group)
            return self._register(
                SQSSubscription(self, queue_url=queue_url, topic=topic, lease=lease)
            )
        name = naming.temporary_queue_name(self._prefix, "sub", topic, fifo=self._fifo)
        queue_url, subscription_arn = self._subscribed_queue(
            topic, name, TEMPORARY_RETENTION_SECONDS
        )

        def remove() -> None:
            self.sns.unsubscribe(SubscriptionArn=subscription_arn)
            self._delete_queue(queue_url)

        return self._register(
            SQSSubscription(self, queue_url=queue_url, topic=topic, lease=lease, cleanup=remove)
        )

    def _delete_queue(self, queue_url: str) -> None:
        try:
            self.sqs.delete_queue(QueueUrl=queue_url)
        except botocore.exceptions.ClientError as err:
            if _code(err) not in _NO_SUCH_QUEUE_CODES:
                raise

    def _register(self, subscription: SQSSubscription) -> SQSSubscription:
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: SQSSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    # -- request / reply ---------------------------------------------------------------------
    def open_inbox(self) -> Inbox:
        """A temporary queue of this connection's own (not fed by SNS): servers send replies
        straight into it, and closing the broker deletes it."""
        name = naming.temporary_queue_name(self._prefix, "reply", fifo=False)
        queue_url = self._create_queue(
            name, {"MessageRetentionPeriod": str(TEMPORARY_RETENTION_SECONDS)}
        )
        subscription = SQSSubscription(
            self,
            queue_url=queue_url,
            topic=queue_url,
            lease=self.options.visibility_timeout,
            cleanup=lambda: self._delete_queue(queue_url),
        )
        return Inbox(queue_url, self._register(subscription))

    def send_reply(self, address: str, message: Message) -> None:
        form = codec.encode(message)
        self.sqs.send_message(
            QueueUrl=address, MessageBody=form.body, MessageAttributes=form.attributes
        )

    # -- failures ----------------------------------------------------------------------------
    def drop_connections(self) -> None:
        """Test hook, as if this client lost its network: its HTTP connections are closed and
        every delivery it holds is abandoned (acks for them are discarded); SQS hands those
        messages out again once their visibility timeout runs out."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.forget_leases()
        self.sqs.close()
        self.sns.close()

    def classify_error(self, error: BaseException) -> type[Error]:
        if isinstance(
            error, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
        ):
            return ConnectionError
        if isinstance(
            error,
            (
                botocore.exceptions.NoCredentialsError,
                botocore.exceptions.PartialCredentialsError,
                botocore.exceptions.NoRegionError,
                botocore.exceptions.ProfileNotFound,
            ),
        ):
            return ConfigError
        if isinstance(error, botocore.exceptions.ClientError):
            code = _code(error)
            if code in _CREDENTIAL_CODES:
                return ConfigError
            if code in _UNAVAILABLE_CODES:
                return ConnectionError
            return Error
        return super().classify_error(error)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
            publishers, self._publishers = self._publishers, None
        if publishers is not None:
            publishers.shutdown(wait=True)  # a publish still running finishes first
        failures: list[BaseException] = []
        for subscription in subscriptions:
            try:
                subscription.close()
            except Exception as err:  # close the others and the clients anyway
                failures.append(err)
        self.sqs.close()
        self.sns.close()
        if failures:
            raise failures[0]


def _code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _fifo_id(value: str) -> str:
    """`value` as a FIFO MessageGroupId / MessageDeduplicationId (1-128 printable ASCII), or a
    digest of it. Two keys sharing a digest only share an order, never lose one."""
    if 0 < len(value) <= 128 and all(c in _FIFO_ID_CHARACTERS for c in value):
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
