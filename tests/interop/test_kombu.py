"""carrot-gateway against a Python kombu peer (the library Celery uses; carrot's successor).

What the gateway publishes must be what kombu consumers decode, value for value and type for
type; topology declared over HTTP must be what kombu declares itself, so kombu can redeclare it
without PRECONDITION_FAILED; and what kombu publishes must be visible through the gateway.
"""

import base64
import datetime
import json
import math

import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Producer, Queue
from kombu.serialization import dumps as kombu_dumps

from peer import ACCEPT, AMQP_URL, RECEIVE_TIMEOUT, path_name, receive

#: A message body with every JSON type, nested, in forms every serializer reads alike.
PAYLOAD = {
    "id": 42,
    "negative": -7,
    "big": 2**53 + 1,
    "price": 1.5,
    "ratio": -0.25,
    "name": "grüße ✓ 日本",
    "empty": "",
    "quoted": 'say "hi"\n\ttwice',
    "looks_like_json": "true",
    "looks_like_a_number": "123",
    "active": True,
    "deleted": False,
    "missing": None,
    "tags": ["a", 1, 2.5, False, None, [], {}],
    "nested": {"level": {"deeper": [{"k": "v"}, [1, [2, [3]]]]}},
}


def assert_same_value(got, want, path="body"):
    """Equal, and of the same Python types all the way down (True is not 1, 1.0 is not 1)."""
    assert type(got) is type(want), f"{path}: {got!r} ({type(got).__name__}), want {want!r}"
    if isinstance(want, dict):
        assert set(got) == set(want), f"{path}: keys {sorted(got)}, want {sorted(want)}"
        for key in want:
            assert_same_value(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {got!r}, want {want!r}"
        for index, (item, wanted) in enumerate(zip(got, want)):
            assert_same_value(item, wanted, f"{path}[{index}]")
    else:
        assert got == want, f"{path}: {got!r}, want {want!r}"


def declare_plain_queue(gateway, label, **settings):
    """A queue declared over HTTP, reached through the default exchange by its name."""
    name = gateway.queue_name(label)
    gateway.declare_queue(name, durable=False, **settings)
    return name


def publish_json(gateway, queue, value, **params):
    response = gateway.publish_raw(
        "amq.default", json.dumps(value), routing_key=queue, **params
    )
    assert response.status_code == 200, response.text
    assert response.json()["routed"] is True, response.text
    return response


# Serializers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "serializer", [None, "json", "yaml", "msgpack"], ids=["default", "json", "yaml", "msgpack"]
)
def test_serialized_body_decodes_in_kombu(gateway, amqp, serializer):
    queue = declare_plain_queue(gateway, f"ser-{serializer}")
    params = {"serializer": serializer} if serializer else {}
    publish_json(gateway, queue, PAYLOAD, **params)

    (message,) = receive(amqp, queue, 1)

    # The content type and encoding kombu itself would have published this value with.
    want_type, want_encoding, _ = kombu_dumps(PAYLOAD, serializer=serializer or "json")
    assert message.content_type == want_type
    assert message.content_encoding == want_encoding
    assert_same_value(message.decode(), PAYLOAD)
    assert_same_value(message.payload, PAYLOAD)


def test_simple_queue_declared_by_kombu_receives_gateway_message(gateway, amqp):
    # kombu's SimpleQueue declares a direct exchange and a queue of the same name, bound by it.
    name = gateway.queue_name("simple")
    gateway.track_exchange(name)
    value = {"task": "webshot", "args": [1, "two"], "kwargs": {"retries": 3}}
    with amqp.SimpleQueue(name, no_ack=False, accept=ACCEPT) as simple:
        response = gateway.publish_raw(
            name, json.dumps(value), routing_key=name, serializer="msgpack"
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"routed": True}
        message = simple.get(block=True, timeout=RECEIVE_TIMEOUT)
        message.ack()
    assert message.content_type == "application/x-msgpack"
    assert message.content_encoding == "binary"
    assert_same_value(message.payload, value)


def test_msgpack_keeps_integer_and_float_extremes(gateway, amqp):
    queue = declare_plain_queue(gateway, "msgpack-extremes")
    value = {
        "u64_max": 2**64 - 1,
        "i64_min": -(2**63),
        "zero": 0,
        "huge_float": 1e20,
        "tiny_float": 1e-7,
        "text": "日本",
        "deep": [[[[{"a": [None]}]]]],
    }
    publish_json(gateway, queue, value, serializer="msgpack")
    (message,) = receive(amqp, queue, 1)
    assert_same_value(message.decode(), value)


# YAML 1.1 (PyYAML, hence kombu) reads these plain scalars as booleans, integers, dates or
# strings: a YAML emitter for kombu must quote the strings and write floats with a dot and a
# signed exponent, as yaml.safe_dump does.
YAML_1_1_STRINGS = ["yes", "no", "on", "off", "NO", "1_000", "1:20", "2001-12-14"]
YAML_1_1_FLOATS = [1e20, 1e-7]


def assert_kombu_decodes(message, value):
    try:
        assert_same_value(message.decode(), value)
    except AssertionError as error:
        raise AssertionError(f"{error}; the gateway published {message.body!r}") from None


@pytest.mark.parametrize("text", YAML_1_1_STRINGS)
def test_yaml_string_that_yaml_1_1_would_resolve_stays_a_string(gateway, amqp, text):
    queue = declare_plain_queue(gateway, "yaml-string")
    value = {"value": text, "list": [text]}
    publish_json(gateway, queue, value, serializer="yaml")
    (message,) = receive(amqp, queue, 1)
    assert (message.content_type, message.content_encoding) == ("application/x-yaml", "utf-8")
    assert_kombu_decodes(message, value)


@pytest.mark.parametrize("number", YAML_1_1_FLOATS)
def test_yaml_float_with_exponent_stays_a_float(gateway, amqp, number):
    queue = declare_plain_queue(gateway, "yaml-float")
    value = {"value": number}
    publish_json(gateway, queue, value, serializer="yaml")
    (message,) = receive(amqp, queue, 1)
    assert (message.content_type, message.content_encoding) == ("application/x-yaml", "utf-8")
    assert_kombu_decodes(message, value)


def test_pickle_is_refused_and_nothing_arrives(gateway, amqp):
    queue = declare_plain_queue(gateway, "pickle")

    raw = gateway.publish_raw(
        "amq.default", json.dumps({"x": 1}), routing_key=queue, serializer="pickle"
    )
    assert raw.status_code == 415, raw.text
    assert raw.headers["Content-Type"].startswith("application/problem+json")
    problem = raw.json()
    assert problem["code"] == "unsupported_serializer"
    assert problem["status"] == 415
    assert "pickle" in problem["detail"]

    # In a batch the valid first message is not published either: nothing is half-done.
    batch = gateway.publish_batch(
        "amq.default",
        [
            {"routing_key": queue, "body": {"ok": True}},
            {"routing_key": queue, "body": {"x": 1}, "serializer": "pickle"},
        ],
    )
    assert batch.status_code == 415, batch.text
    assert batch.json()["code"] == "unsupported_serializer"

    assert gateway.queue_info(queue)["message_count"] == 0
    with amqp.channel() as channel:
        assert channel.basic_get(queue, no_ack=True) is None


# Headers and properties ----------------------------------------------------------------

HEADERS = {
    "x-trace": "abc-123",
    "attempt": 1,
    "big": 2**40,
    "negative": -(2**62),
    "zero": 0,
    "ratio": 0.5,
    "retry": True,
    "final": False,
    "nothing": None,
    "unicode": "grüße ✓",
    "empty": "",
    "list": [1, "two", True, 2.5, None, [3, 4], {"k": "v"}],
    "empty_list": [],
    "nested": {"a": {"b": {"c": [1, {"d": False}]}}, "n": 7, "s": "x"},
    "empty_table": {},
}


def test_batch_headers_and_properties_reach_kombu(gateway, amqp):
    queue = declare_plain_queue(gateway, "batch-props", arguments={"x-max-priority": 9})
    response = gateway.publish_batch(
        "amq.default",
        [
            {
                "routing_key": queue,
                "body": {"n": 1},
                "properties": {
                    "headers": HEADERS,
                    "priority": 7,
                    "correlation_id": "corr-1",
                    "message_id": "msg-1",
                    "reply_to": "replies",
                    "type": "order.created",
                    "app_id": "shop",
                    "timestamp": 1_700_000_000,
                    "expiration": "60000",
                },
            },
            {"routing_key": queue, "body": {"n": 2}, "properties": {"delivery_mode": 1}},
            {"routing_key": queue, "body": {"n": 3}, "serializer": "msgpack"},
            {"routing_key": queue, "body": {"n": 4}, "serializer": "yaml"},
            {"routing_key": queue, "body": "hello ✓", "body_encoding": "utf8"},
            {
                "routing_key": queue,
                "body": base64.b64encode(b"\x00\xffbytes").decode(),
                "body_encoding": "base64",
            },
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"results": [{"routed": True}] * 6}

    # The queue has x-max-priority: the priority-7 message comes first, the rest in order.
    first, second, third, fourth, fifth, sixth = receive(amqp, queue, 6)

    assert_same_value(first.headers, HEADERS, "headers")
    props = first.properties
    assert props["priority"] == 7
    assert props["correlation_id"] == "corr-1"
    assert props["message_id"] == "msg-1"
    assert props["reply_to"] == "replies"
    assert props["type"] == "order.created"
    assert props["app_id"] == "shop"
    assert props["expiration"] == "60000"
    assert props["delivery_mode"] == 2  # persistent by default, as in carrot
    stamp = props["timestamp"]
    if isinstance(stamp, datetime.datetime):
        stamp = stamp.replace(tzinfo=stamp.tzinfo or datetime.timezone.utc).timestamp()
    assert stamp == 1_700_000_000
    assert first.content_type == "application/json"
    assert_same_value(first.payload, {"n": 1})

    assert second.properties["delivery_mode"] == 1
    assert second.headers == {}
    assert_same_value(second.payload, {"n": 2})

    assert (third.content_type, third.content_encoding) == ("application/x-msgpack", "binary")
    assert_same_value(third.payload, {"n": 3})
    assert (fourth.content_type, fourth.content_encoding) == ("application/x-yaml", "utf-8")
    assert_same_value(fourth.payload, {"n": 4})

    assert fifth.content_type == "text/plain"
    assert fifth.payload == "hello ✓"

    assert sixth.content_type == "application/octet-stream"
    body = sixth.body
    assert (body if isinstance(body, bytes) else body.encode("latin-1")) == b"\x00\xffbytes"


def test_raw_mode_query_properties_reach_kombu(gateway, amqp):
    queue = declare_plain_queue(gateway, "raw-props", arguments={"x-max-priority": 9})
    publish_json(
        gateway,
        queue,
        {"n": 1},
        priority=5,
        message_id="m-1",
        correlation_id="c-1",
        app_id="curl",
    )
    publish_json(gateway, queue, {"n": 2}, delivery_mode="transient")

    first, second = receive(amqp, queue, 2)
    assert first.properties["priority"] == 5
    assert first.properties["message_id"] == "m-1"
    assert first.properties["correlation_id"] == "c-1"
    assert first.properties["app_id"] == "curl"
    assert first.properties["delivery_mode"] == 2
    assert first.headers == {}
    assert (first.content_type, first.content_encoding) == ("application/json", "utf-8")
    assert_same_value(first.payload, {"n": 1})
    assert second.properties["delivery_mode"] == 1
    assert_same_value(second.payload, {"n": 2})


# Topology ------------------------------------------------------------------------------


def test_topic_topology_declared_over_http_works_for_kombu(gateway, amqp):
    exchange = gateway.exchange_name("stocks")
    queue = gateway.queue_name("stock-prices")
    gateway.declare_exchange(exchange, type="topic", durable=True)
    gateway.declare_queue(
        queue,
        durable=True,
        bindings=[{"exchange": exchange, "routing_key": "*.stock.#"}],
    )

    with amqp.channel() as channel:
        # Passive declarations: both exist as declared.
        Exchange(exchange, type="topic", passive=True)(channel).declare()
        name, message_count, consumer_count = channel.queue_declare(queue, passive=True)
        assert (name, message_count, consumer_count) == (queue, 0, 0)
        # kombu's own declaration of the same topology is the same: no PRECONDITION_FAILED.
        Queue(
            queue,
            Exchange(exchange, type="topic", durable=True),
            routing_key="*.stock.#",
            durable=True,
        )(channel).declare()

    routed = {}
    for key in ["usd.stock", "eur.stock.db", "stock.nasdaq"]:
        response = gateway.publish_raw(exchange, json.dumps({"key": key}), routing_key=key)
        assert response.status_code == 200, response.text
        routed[key] = response.json()["routed"]
    assert routed == {"usd.stock": True, "eur.stock.db": True, "stock.nasdaq": False}

    messages = receive(amqp, queue, 2)
    seen = sorted(
        (m.delivery_info["exchange"], m.delivery_info["routing_key"], m.payload["key"])
        for m in messages
    )
    assert seen == [
        (exchange, "eur.stock.db", "eur.stock.db"),
        (exchange, "usd.stock", "usd.stock"),
    ]


def test_priority_queue_declared_over_http_matches_kombu(gateway, amqp):
    queue = gateway.queue_name("priority")
    gateway.declare_queue(
        queue,
        durable=True,
        arguments={"x-max-priority": 9, "x-message-ttl": 60000, "x-max-length": 100},
    )

    with amqp.channel() as channel:
        # kombu sends these as its own integer types; RabbitMQ compares them with the
        # gateway's, so a mismatch of kinds would be PRECONDITION_FAILED here.
        Queue(
            queue,
            exchange=Exchange(""),
            routing_key=queue,
            durable=True,
            max_priority=9,
            message_ttl=60,
            max_length=100,
        )(channel).declare()

    # The check is real: kombu asking for another maximum priority is refused.
    with amqp.channel() as channel:
        with pytest.raises(PreconditionFailed):
            Queue(
                queue,
                exchange=Exchange(""),
                routing_key=queue,
                durable=True,
                max_priority=5,
                message_ttl=60,
                max_length=100,
            )(channel).declare()

    # And the queue orders what the gateway publishes by priority for kombu.
    for priority in [1, 9, 5]:
        publish_json(gateway, queue, {"priority": priority}, priority=priority)
    messages = receive(amqp, queue, 3)
    assert [m.payload["priority"] for m in messages] == [9, 5, 1]
    assert [m.properties["priority"] for m in messages] == [9, 5, 1]


def test_priority_queue_declared_by_kombu_matches_gateway(gateway, amqp):
    queue = gateway.queue_name("kombu-priority")
    with amqp.channel() as channel:
        Queue(
            queue, exchange=Exchange(""), routing_key=queue, durable=True, max_priority=9
        )(channel).declare()

    same = gateway.request(
        "PUT",
        f"/queues/{path_name(queue)}",
        json={"durable": True, "arguments": {"x-max-priority": 9}},
    )
    assert same.status_code == 200, same.text
    assert same.json()["name"] == queue

    other = gateway.request(
        "PUT",
        f"/queues/{path_name(queue)}",
        json={"durable": True, "arguments": {"x-max-priority": 5}},
    )
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "precondition_failed"


# What kombu publishes, seen through the gateway ----------------------------------------


def kombu_publish(queue, bodies):
    """Publishes with a kombu Producer, waiting for each publisher confirm."""
    with Connection(
        AMQP_URL, connect_timeout=RECEIVE_TIMEOUT, transport_options={"confirm_publish": True}
    ) as connection:
        connection.ensure_connection(max_retries=3, timeout=RECEIVE_TIMEOUT)
        producer = Producer(connection.default_channel)
        for body, serializer, headers in bodies:
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                serializer=serializer,
                headers=headers,
                timeout=RECEIVE_TIMEOUT,
            )


KOMBU_MESSAGES = [
    ({"id": 1, "px": 1.5, "tags": ["a"]}, "json", {"attempt": 1}),
    ({"id": 2, "ok": True, "none": None}, "yaml", {"x-trace": "abc"}),
    ({"id": 3, "deep": {"l": [1, 2]}}, "msgpack", {"nested": {"n": 2}}),
]


def test_messages_published_by_kombu_are_counted_and_purged(gateway):
    queue = declare_plain_queue(gateway, "kombu-published")
    kombu_publish(queue, KOMBU_MESSAGES)

    assert gateway.queue_info(queue)["message_count"] == len(KOMBU_MESSAGES)
    purge = gateway.request("DELETE", f"/queues/{path_name(queue)}/messages")
    assert purge.status_code == 200, purge.text
    assert purge.json()["discarded"] == len(KOMBU_MESSAGES)
    assert gateway.queue_info(queue)["message_count"] == 0


def serves(gateway, path):
    """Whether the gateway's OpenAPI document lists a path (some are not built yet)."""
    response = gateway.request("GET", "/openapi.json")
    assert response.status_code == 200, response.text
    return path in response.json().get("paths", {})


def test_messages_published_by_kombu_are_decoded_by_the_gateway(gateway):
    if not serves(gateway, "/queues/{queue}/next"):
        pytest.skip("the gateway does not serve GET /queues/{queue}/next yet")
    queue = declare_plain_queue(gateway, "kombu-decoded")
    kombu_publish(queue, KOMBU_MESSAGES)

    for body, serializer, headers in KOMBU_MESSAGES:
        response = gateway.request(
            "GET", f"/queues/{path_name(queue)}/next", params={"ack": "auto"}
        )
        assert response.status_code == 200, response.text
        message = response.json()
        content_type, content_encoding, _ = kombu_dumps(body, serializer=serializer)
        assert message["body_encoding"] == "json", message
        assert_same_value(message["body"], body)
        assert message["properties"]["content_type"] == content_type
        assert message["properties"]["content_encoding"] == content_encoding
        assert_same_value(message["properties"]["headers"], headers, "headers")
        assert message["routing_key"] == queue
    empty = gateway.request("GET", f"/queues/{path_name(queue)}/next", params={"ack": "auto"})
    assert empty.status_code == 204, empty.text


def test_float_headers_stay_floats(gateway, amqp):
    queue = declare_plain_queue(gateway, "float-headers")
    headers = {"half": 0.5, "whole": 2.0, "pi": math.pi, "neg": -1e-9}
    response = gateway.publish_batch(
        "amq.default",
        [{"routing_key": queue, "body": None, "properties": {"headers": headers}}],
    )
    assert response.status_code == 200, response.text
    (message,) = receive(amqp, queue, 1)
    assert_same_value(message.headers, headers, "headers")
    assert message.payload is None


def test_trace_context_headers_reach_kombu(gateway, amqp):
    queue = declare_plain_queue(gateway, "trace")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = gateway.request(
        "POST",
        "/exchanges/amq.default/messages",
        params={"routing_key": queue},
        data=json.dumps({"id": 1}),
        headers={
            "Content-Type": "application/json",
            "traceparent": traceparent,
            "tracestate": "congo=t61rcWkgMzE",
            "baggage": "user=ada",
        },
    )
    assert response.status_code == 200, response.text
    [message] = receive(amqp, queue, 1)
    assert message.headers["traceparent"] == traceparent
    assert message.headers["tracestate"] == "congo=t61rcWkgMzE"
    assert message.headers["baggage"] == "user=ada"
