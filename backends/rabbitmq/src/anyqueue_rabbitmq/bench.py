"""The raw-pika baseline `anyqueue bench amqp://...` compares anyqueue against.

The same work as anyqueue's side, done the best way plain pika allows, single-threaded:

- publish: persistent messages to a durable topic exchange bound to a durable queue, in batches
  of `batch` (100, as anyqueue's side publishes) on a confirm-mode SelectConnection channel,
  each batch's confirms awaited (pipelined, not one round trip per message);
- consume+ack: basic.qos prefetch `batch`, one basic.ack per message, from the first delivery to
  the last ack (a SelectConnection, no extra thread);
- request/reply: direct reply-to (`amq.rabbitmq.reply-to`) with a server on its own connection
  and thread; sequential requests after one warm-up, p50 / p99 latency.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from typing import Any

import pika
import pika.channel
import pika.spec
from pika.adapters.select_connection import SelectConnection

from anyqueue.config import BrokerURL, parse_options

from .driver import RabbitOptions, connection_parameters
from .topology import DIRECT_REPLY_TO


def baseline(
    url: str, *, messages: int, body_size: int, requests: int, batch: int = 100
) -> dict[str, float]:
    """Measure plain pika on `url`: publish_per_s, consume_per_s, request_p50/p99_ms."""
    parsed = BrokerURL.parse(url)
    options = parse_options(RabbitOptions, parsed.query, {})
    parameters = connection_parameters(parsed, options, "anyqueue-bench-baseline")
    run_id = uuid.uuid4().hex[:12]
    exchange, queue = f"bench-baseline-{run_id}", f"bench-baseline-{run_id}"
    body = bytes(i % 251 for i in range(body_size))
    figures: dict[str, float] = {}
    setup = pika.BlockingConnection(parameters)
    try:
        channel = setup.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="bench")
        if messages > 0:
            figures["publish_per_s"] = _publish(parameters, exchange, body, messages, batch)
            figures["consume_per_s"] = _consume(parameters, queue, messages, batch)
        if requests > 0:
            latencies = _request_reply(parameters, queue, body, requests)
            latencies.sort()
            figures["request_p50_ms"] = _percentile(latencies, 50) * 1000
            figures["request_p99_ms"] = _percentile(latencies, 99) * 1000
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
    finally:
        with contextlib.suppress(Exception):
            setup.close()
    return figures


def _percentile(ordered: list[float], percent: float) -> float:
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def _run(parameters: pika.ConnectionParameters, on_channel: Any) -> None:
    """Open a SelectConnection and a channel, call `on_channel(connection, channel)`, and run
    the ioloop until the connection closes; re-raise why it failed, if it did."""
    failure: list[BaseException] = []

    def opened(connection: SelectConnection) -> None:
        connection.channel(on_open_callback=lambda channel: on_channel(connection, channel))

    def open_failed(connection: SelectConnection, error: BaseException) -> None:
        failure.append(error)
        connection.ioloop.stop()

    def closed(connection: SelectConnection, reason: BaseException) -> None:
        if not isinstance(reason, pika.exceptions.ConnectionClosedByClient):
            failure.append(reason)
        connection.ioloop.stop()

    connection = SelectConnection(
        parameters,
        on_open_callback=opened,
        on_open_error_callback=open_failed,
        on_close_callback=closed,
    )
    connection.ioloop.start()
    if failure:
        raise failure[0]


def _publish(
    parameters: pika.ConnectionParameters, exchange: str, body: bytes, messages: int, batch: int
) -> float:
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/octet-stream")
    sent = outstanding = confirmed_up_to = 0
    started = finished = 0.0

    def on_channel(connection: SelectConnection, channel: pika.channel.Channel) -> None:
        def send_batch() -> None:
            nonlocal sent, outstanding
            count = min(batch, messages - sent)
            for _ in range(count):
                channel.basic_publish(exchange, "bench", body, properties)
            sent += count
            outstanding = count

        def confirmed(frame: Any) -> None:
            nonlocal outstanding, confirmed_up_to, finished
            method = frame.method
            if not isinstance(method, pika.spec.Basic.Ack):
                raise RuntimeError("the broker refused a message")
            if method.multiple:
                outstanding -= method.delivery_tag - confirmed_up_to
                confirmed_up_to = method.delivery_tag
            else:
                outstanding -= 1
                confirmed_up_to += 1
            if outstanding > 0:
                return
            if sent < messages:
                send_batch()
            else:
                finished = time.perf_counter()
                connection.close()

        def confirming(_frame: Any) -> None:
            nonlocal started
            started = time.perf_counter()
            send_batch()

        channel.confirm_delivery(confirmed, callback=confirming)

    _run(parameters, on_channel)
    return messages / (finished - started)


def _consume(parameters: pika.ConnectionParameters, queue: str, messages: int, batch: int) -> float:
    received = 0
    first = last = 0.0

    def on_channel(connection: SelectConnection, channel: pika.channel.Channel) -> None:
        def arrived(
            ch: pika.channel.Channel, method: Any, properties: Any, message_body: bytes
        ) -> None:
            nonlocal received, first, last
            if received == 0:
                first = time.perf_counter()
            ch.basic_ack(method.delivery_tag)
            received += 1
            if received == messages:
                last = time.perf_counter()
                connection.close()

        channel.basic_qos(
            prefetch_count=batch,
            callback=lambda _frame: channel.basic_consume(queue, arrived),
        )

    _run(parameters, on_channel)
    elapsed = last - first
    return max(1, messages - 1) / elapsed if elapsed > 0 else math.inf


def _request_reply(
    parameters: pika.ConnectionParameters, queue: str, body: bytes, requests: int
) -> list[float]:
    ready = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        connection = pika.BlockingConnection(parameters)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)

        def answer(ch: Any, method: Any, properties: Any, request: bytes) -> None:
            ch.basic_publish(
                "",
                properties.reply_to,
                request,
                pika.BasicProperties(correlation_id=properties.correlation_id),
            )
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(queue, answer)
        ready.set()
        while not stop.is_set():
            connection.process_data_events(time_limit=0.1)
        connection.close()

    server = threading.Thread(target=serve, name="bench-baseline-server", daemon=True)
    server.start()
    ready.wait(30)
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        replies: list[str] = []
        channel.basic_consume(
            DIRECT_REPLY_TO,
            lambda ch, method, properties, reply: replies.append(properties.correlation_id),
            auto_ack=True,
        )
        latencies: list[float] = []
        for index in range(requests + 1):  # the first is a warm-up
            correlation_id = uuid.uuid4().hex
            start = time.perf_counter()
            channel.basic_publish(
                "",
                queue,
                body,
                pika.BasicProperties(reply_to=DIRECT_REPLY_TO, correlation_id=correlation_id),
            )
            while correlation_id not in replies:
                connection.process_data_events(time_limit=None)
            replies.clear()
            if index:
                latencies.append(time.perf_counter() - start)
        return latencies
    finally:
        stop.set()
        server.join(10)
        connection.close()
