#!/usr/bin/env python3
"""Independent AMQP check for tests/clients: what is left in a queue, read with pika.

Used as a module by flow.py and as a command by the TypeScript flow:

    amqp_check.py --amqp-url URL --queue NAME --expect FILE   # FILE: JSON list, see below
    amqp_check.py --amqp-url URL --queue NAME --gone           # the queue must not exist
    amqp_check.py --amqp-url URL --queue NAME --delete         # cleanup: delete it if there

An expected message is {"body_b64": "...", "content_type": "...", "message_id": "...",
"headers": {...}, "json": true}; only "body_b64" is required. With "json": true the bodies
are compared as parsed JSON, not byte for byte. The messages are read with basic.get
without ack and returned to the queue when the channel closes. Exits 0 when the queue holds
exactly the expected messages in that order, 1 otherwise; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

import pika
import pika.exceptions

TIMEOUT = 10.0


def _connect(amqp_url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(amqp_url)
    params.socket_timeout = TIMEOUT
    params.stack_timeout = TIMEOUT
    params.blocked_connection_timeout = TIMEOUT
    params.connection_attempts = 3
    params.retry_delay = 1
    return pika.BlockingConnection(params)


def _media_type(value: str | None) -> str | None:
    return value.split(";")[0].strip().lower() if value else value


def check_remaining(amqp_url: str, queue: str, expected: list[dict[str, Any]]) -> list[str]:
    """Returns what differs (empty when the queue holds exactly `expected`, in order)."""
    problems: list[str] = []
    connection = _connect(amqp_url)
    try:
        channel = connection.channel()
        declared = channel.queue_declare(queue=queue, passive=True)
        ready = declared.method.message_count
        if ready != len(expected):
            problems.append(f"queue {queue!r} holds {ready} ready messages, expected {len(expected)}")
        got = []
        for _ in range(len(expected) + 1):
            method, props, body = channel.basic_get(queue=queue, auto_ack=False)
            if method is None:
                break
            got.append((props, body))
        if len(got) != len(expected):
            problems.append(f"basic.get returned {len(got)} messages, expected {len(expected)}")
        for index, (want, (props, body)) in enumerate(zip(expected, got), start=1):
            want_body = base64.b64decode(want["body_b64"])
            if want.get("json"):
                try:
                    same = json.loads(body) == json.loads(want_body)
                except ValueError:
                    same = False
            else:
                same = body == want_body
            if not same:
                problems.append(f"message {index}: body {body!r}, expected {want_body!r}")
            if "content_type" in want and _media_type(props.content_type) != _media_type(want["content_type"]):
                problems.append(
                    f"message {index}: content_type {props.content_type!r}, expected {want['content_type']!r}"
                )
            if "message_id" in want and props.message_id != want["message_id"]:
                problems.append(f"message {index}: message_id {props.message_id!r}, expected {want['message_id']!r}")
            for key, value in (want.get("headers") or {}).items():
                have = (props.headers or {}).get(key)
                if isinstance(have, bytes):
                    have = have.decode("utf-8", "replace")
                if have != value:
                    problems.append(f"message {index}: header {key!r} = {have!r}, expected {value!r}")
        channel.close()  # unacked messages go back to the queue
    except pika.exceptions.ChannelClosedByBroker as error:
        problems.append(f"broker closed the channel: {error}")
    finally:
        if connection.is_open:
            connection.close()
    return problems


def queue_exists(amqp_url: str, queue: str) -> bool:
    connection = _connect(amqp_url)
    try:
        channel = connection.channel()
        try:
            channel.queue_declare(queue=queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == 404:
                return False
            raise
        channel.close()
        return True
    finally:
        if connection.is_open:
            connection.close()


def delete_queue(amqp_url: str, queue: str) -> None:
    """Cleanup after a failed run: deletes the queue if it is there."""
    if queue_exists(amqp_url, queue):
        connection = _connect(amqp_url)
        try:
            connection.channel().queue_delete(queue=queue)
        finally:
            if connection.is_open:
                connection.close()


def publish(amqp_url: str, queue: str, body: bytes, content_type: str, **properties: Any) -> None:
    """Fallback used by the flows to go on after a failed publish step (never a pass)."""
    connection = _connect(amqp_url)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(content_type=content_type, delivery_mode=2, **properties),
            mandatory=True,
        )
    finally:
        if connection.is_open:
            connection.close()


def declare(amqp_url: str, queue: str) -> None:
    """Fallback used by the flows to go on after a failed declare step (never a pass)."""
    connection = _connect(amqp_url)
    try:
        connection.channel().queue_declare(queue=queue, durable=False, arguments={"x-expires": 600000})
    finally:
        if connection.is_open:
            connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--expect", metavar="FILE", help="JSON list of expected messages")
    group.add_argument("--gone", action="store_true")
    group.add_argument("--delete", action="store_true")
    group.add_argument("--publish", metavar="FILE", help="JSON list of messages to publish (fallback)")
    group.add_argument("--declare", action="store_true", help="declare the queue (fallback)")
    args = parser.parse_args()
    if args.delete:
        delete_queue(args.amqp_url, args.queue)
        return 0
    if args.declare:
        declare(args.amqp_url, args.queue)
        return 0
    if args.gone:
        if queue_exists(args.amqp_url, args.queue):
            print(f"amqp_check: queue {args.queue!r} still exists", file=sys.stderr)
            return 1
        return 0
    if args.publish:
        with open(args.publish, encoding="utf-8") as f:
            for message in json.load(f):
                publish(args.amqp_url, args.queue, base64.b64decode(message["body_b64"]), message["content_type"])
        return 0
    with open(args.expect, encoding="utf-8") as f:
        expected = json.load(f)
    problems = check_remaining(args.amqp_url, args.queue, expected)
    for problem in problems:
        print(f"amqp_check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
