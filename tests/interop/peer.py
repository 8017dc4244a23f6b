"""The two peers of the interoperability tests: the gateway's HTTP API and a kombu consumer.

Every wait, HTTP or AMQP, ends at a deadline.
"""

import os
import socket
import time
import uuid
from urllib.parse import quote

import requests
from kombu import Consumer, Queue

#: Seconds any single HTTP request may take.
HTTP_TIMEOUT = 15
#: Seconds a test waits for messages the broker should already hold.
RECEIVE_TIMEOUT = 10
#: Seconds a test listens to make sure nothing more arrives.
QUIET_PERIOD = 0.5

AMQP_URL = os.environ.get(
    "CARROT_INTEROP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"
)

#: What the kombu consumers of these tests accept: kombu's safe serializers and text.
ACCEPT = ["json", "yaml", "msgpack", "text/plain"]


def path_name(name):
    """A name as a path segment: percent-encoded UTF-8, nothing left as a separator."""
    return quote(name, safe="")


class Gateway:
    """The gateway's HTTP API, with the names a test declared for cleanup."""

    def __init__(self, base_url, session):
        self.base_url = base_url.rstrip("/")
        self.http = session
        self._queues = []
        self._exchanges = []
        self._subscriptions = []

    def url(self, path):
        return self.base_url + path

    def request(self, method, path, **kwargs):
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return self.http.request(method, self.url(path), **kwargs)

    # Names -----------------------------------------------------------------------------

    def queue_name(self, label):
        """A fresh queue name, deleted when the test ends (whoever declared it)."""
        name = f"interop.{label}.q.{uuid.uuid4().hex}"
        self._queues.append(name)
        return name

    def exchange_name(self, label):
        """A fresh exchange name, deleted when the test ends (whoever declared it)."""
        name = f"interop.{label}.x.{uuid.uuid4().hex}"
        self._exchanges.append(name)
        return name

    def track_exchange(self, name):
        """Deletes an exchange someone else named (e.g. kombu's SimpleQueue) when the test ends."""
        self._exchanges.append(name)

    def subscription_name(self, label):
        """A fresh push subscription name, deleted when the test ends."""
        name = f"interop.{label}.s.{uuid.uuid4().hex}"
        self._subscriptions.append(name)
        return name

    def cleanup(self):
        problems = []
        for kind, names in (
            ("subscriptions", self._subscriptions),
            ("queues", self._queues),
            ("exchanges", self._exchanges),
        ):
            for name in names:
                try:
                    response = self.request("DELETE", f"/{kind}/{path_name(name)}")
                except requests.RequestException as error:
                    problems.append(f"DELETE /{kind}/{name}: {error}")
                    continue
                if response.status_code not in (200, 204, 404):
                    problems.append(
                        f"DELETE /{kind}/{name}: {response.status_code} {response.text}"
                    )
        return problems

    # Topology --------------------------------------------------------------------------

    def declare_exchange(self, name, **settings):
        response = self.request("PUT", f"/exchanges/{path_name(name)}", json=settings)
        assert response.status_code == 201, response.text
        return response.json()

    def declare_queue(self, name, **settings):
        response = self.request("PUT", f"/queues/{path_name(name)}", json=settings)
        assert response.status_code == 201, response.text
        return response.json()

    def queue_info(self, name):
        response = self.request("GET", f"/queues/{path_name(name)}")
        assert response.status_code == 200, response.text
        return response.json()

    # Publishing ------------------------------------------------------------------------

    def publish_raw(self, exchange, body, content_type="application/json", **params):
        headers = {"Content-Type": content_type} if content_type else {}
        return self.request(
            "POST",
            f"/exchanges/{path_name(exchange)}/messages",
            params=params,
            data=body,
            headers=headers,
        )

    def publish_batch(self, exchange, messages, **extra):
        document = {"messages": messages, **extra}
        return self.request(
            "POST",
            f"/exchanges/{path_name(exchange)}/messages",
            json=document,
            headers={"Content-Type": "application/vnd.carrot.batch+json"},
        )


def receive(connection, queue_name, count, timeout=RECEIVE_TIMEOUT, quiet=QUIET_PERIOD):
    """Consumes ``count`` messages from an existing queue with a kombu ``Consumer``.

    Returns the kombu messages (acknowledged, bodies not yet decoded) in delivery order.
    Fails if fewer arrive before ``timeout``, or if another one arrives within ``quiet``
    seconds after the last expected one.
    """
    messages = []
    with connection.channel() as channel:
        queue = Queue(queue_name, no_declare=True)
        consumer = Consumer(channel, queues=[queue], accept=ACCEPT, on_message=messages.append)
        with consumer:
            deadline = time.monotonic() + timeout
            while len(messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"only {len(messages)} of {count} messages arrived in {queue_name} "
                        f"within {timeout} s"
                    )
                try:
                    connection.drain_events(timeout=remaining)
                except socket.timeout:
                    pass
            quiet_until = time.monotonic() + quiet
            while True:
                remaining = quiet_until - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    connection.drain_events(timeout=remaining)
                except socket.timeout:
                    break
            for message in messages:
                message.ack()
    assert len(messages) == count, (
        f"{len(messages)} messages arrived in {queue_name}, expected {count}: "
        + repr([m.body for m in messages])
    )
    return messages
