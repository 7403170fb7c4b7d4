"""The cluster operations the driver needs, each bounded by a timeout: creating topics, reading
partition ends, and reading or setting the committed offsets of a group that has no members.

Setting a group's offsets through the admin API is how `declare` makes a group start at the
current end of its topic before any member has joined (and how delivery marks are recorded).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported names
    AdminClient,
    NewTopic,
    OffsetSpec,
)

log = logging.getLogger("anyqueue.kafka")

#: a partition with no committed offset
NO_OFFSET = -1001

#: errors saying that a group has live members (their commits own its position)
GROUP_ACTIVE = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.NON_EMPTY_GROUP,
    }
)
_NOT_YET_VISIBLE = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
    }
)
#: errors worth another attempt: a just-created topic not visible everywhere yet, or a broker
#: connection that is (re)establishing
_TRANSIENT = _NOT_YET_VISIBLE | frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)
_ALREADY_EXISTS = KafkaError.TOPIC_ALREADY_EXISTS
_NO_RIGHT_TO_CREATE = frozenset(
    {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}
)
#: how long a list of all topic names is reused when checking that reply topics exist
_TOPIC_LIST_TTL = 1.0


def error_code(error: BaseException) -> int | None:
    """The librdkafka error code of a KafkaException, else None."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return int(error.args[0].code())
    return None


class Cluster:
    """Admin requests against one cluster; thread-safe; every call waits at most `timeout`."""

    def __init__(self, config: Mapping[str, Any], *, timeout: float) -> None:
        self._admin = AdminClient(dict(config))
        self.timeout = timeout
        self._topics_lock = threading.Lock()
        self._existing: set[str] = set()
        self._listed_at = 0.0
        self._listed: set[str] = set()

    # -- topics ----------------------------------------------------------------------------------
    def check_reachable(self) -> None:
        """Raise KafkaException when no broker answers within the timeout."""
        self._admin.list_topics(timeout=self.timeout)

    def ensure_topic(self, topic: str, partitions: int, replication_factor: int) -> None:
        """Create `topic` unless it exists (remembered, so this costs a request only once)."""
        if topic in self._existing:
            return
        future = self._admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)],
            request_timeout=self.timeout,
            operation_timeout=self.timeout,
        )[topic]
        try:
            future.result(timeout=self.timeout + 1)
        except KafkaException as err:
            code = error_code(err)
            if code == _ALREADY_EXISTS:
                pass
            elif code in _NO_RIGHT_TO_CREATE and topic in self._all_topics(fresh=True):
                pass  # not ours to create, but it is there
            else:
                raise
        self._existing.add(topic)

    def topic_exists(self, topic: str) -> bool:
        """Whether `topic` exists (reading the topic list, which never creates one)."""
        return topic in self._existing or topic in self._all_topics(fresh=False)

    def forget_topic(self, topic: str) -> None:
        self._existing.discard(topic)

    def delete_topic(self, topic: str) -> None:
        self._existing.discard(topic)
        future = self._admin.delete_topics([topic], request_timeout=self.timeout)[topic]
        future.result(timeout=self.timeout + 1)

    def _all_topics(self, *, fresh: bool) -> set[str]:
        with self._topics_lock:
            now = time.monotonic()
            if fresh or now - self._listed_at > _TOPIC_LIST_TTL:
                self._listed = set(self._admin.list_topics(timeout=self.timeout).topics)
                self._listed_at = now
            return self._listed

    def partitions(self, topic: str) -> list[int]:
        """The partition numbers of `topic`, waiting for a just-created topic to show up."""
        deadline = time.monotonic() + self.timeout
        while True:
            metadata = self._admin.list_topics(topic=topic, timeout=self.timeout)
            found = metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return sorted(found.partitions)
            if time.monotonic() > deadline:
                error = found.error if found is not None else None
                raise KafkaException(
                    error or KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {topic!r}")
                )
            time.sleep(0.05)

    def end_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """Each partition's current end (the offset the next message will get)."""
        request = {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}  # type: ignore[no-untyped-call]
        result = self._retrying(
            lambda: self._admin.list_offsets(request, request_timeout=self.timeout)
        )
        return {tp.partition: info.offset for tp, info in result.items()}

    # -- group offsets -----------------------------------------------------------------------------
    def set_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit `offsets` for a group without members (KafkaException if it has some)."""
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        request = [ConsumerGroupTopicPartitions(group, partitions)]
        result = self._retrying(
            lambda: self._admin.alter_consumer_group_offsets(request, request_timeout=self.timeout)
        )
        for tp in result[group].topic_partitions:
            if tp.error is not None:
                raise KafkaException(tp.error)

    def offsets(
        self, group: str, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Committed offsets of `group` for (topic, partition) pairs on any topics."""
        wanted = [TopicPartition(t, p) for t, p in partitions]
        if not wanted:
            return {}
        request = [ConsumerGroupTopicPartitions(group, wanted)]
        result = self._retrying(
            lambda: self._admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
        )
        return {(tp.topic, tp.partition): tp.offset for tp in result[group].topic_partitions}

    def _retrying(self, send: Any) -> dict[Any, Any]:
        """Send an admin request and wait for all of its futures. Retry while a just-created
        topic is not yet visible to every broker or a connection is being re-established, for
        up to twice the timeout (so that one attempt lost in a broken connection, which takes
        the whole timeout to fail, still gets another)."""
        deadline = time.monotonic() + 2 * self.timeout
        while True:
            futures = send()
            try:
                return {
                    key: future.result(timeout=self.timeout + 1) for key, future in futures.items()
                }
            except KafkaException as err:
                if error_code(err) not in _TRANSIENT or time.monotonic() > deadline:
                    raise
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def close(self) -> None:
        self._admin.poll(0)
