"""The script's own RabbitMQ node: rabbitmqctl to inject faults, pika as the independent AMQP client."""

import shlex
import subprocess
import time

import pika

#: Seconds a rabbitmqctl command may take (start_app recovers every queue first).
CTL_DEADLINE = 120
#: Seconds a drain waits for the next message the queue's count promised.
DRAIN_QUIET = 10


class Node:
    """A node started by tests/chaos/run, named and reached as its environment says."""

    def __init__(self, name, amqp_port, rabbitmqctl="rabbitmqctl"):
        self.name = name
        self.amqp_port = amqp_port
        self.rabbitmqctl = shlex.split(rabbitmqctl)

    @property
    def amqp_url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2f"

    def ctl(self, *args):
        """Runs one rabbitmqctl command against this node; returns the seconds it took."""
        start = time.monotonic()
        subprocess.run([*self.rabbitmqctl, "-q", "-n", self.name, *args], check=True,
                       timeout=CTL_DEADLINE, stdout=subprocess.DEVNULL)
        return time.monotonic() - start

    def stop_app(self):
        return self.ctl("stop_app")

    def start_app(self):
        return self.ctl("start_app")

    def channel(self):
        """A fresh connection's channel; closing the connection is the caller's (`with`)."""
        parameters = pika.ConnectionParameters(
            host="127.0.0.1", port=self.amqp_port,
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=5, retry_delay=1, socket_timeout=10,
            blocked_connection_timeout=30)
        return Channel(pika.BlockingConnection(parameters))

    def ready_count(self, queue):
        """Messages ready in `queue` (not counting unacknowledged ones)."""
        with self.channel() as channel:
            return channel.ready_count(queue)

    def publish(self, queue, message_ids):
        """Publishes each id (as message_id and body) to `queue`, persistent, with confirms."""
        with self.channel() as channel:
            channel.ch.confirm_delivery()
            for message_id in message_ids:
                channel.ch.basic_publish(
                    "", queue, message_id.encode(),
                    pika.BasicProperties(message_id=message_id, delivery_mode=2),
                    mandatory=True)

    def drain(self, queue):
        """Consumes every message `queue` holds; returns their message_ids."""
        with self.channel() as channel:
            return channel.drain(queue)


class Channel:
    def __init__(self, connection):
        self.connection = connection
        self.ch = connection.channel()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self.connection.is_open:
            self.connection.close()

    def ready_count(self, queue):
        return self.ch.queue_declare(queue, passive=True).method.message_count

    def drain(self, queue):
        expected = self.ready_count(queue)
        ids = []
        self.ch.basic_qos(prefetch_count=1000)
        for method, properties, _ in self.ch.consume(queue, inactivity_timeout=DRAIN_QUIET):
            if method is None:
                break  # the count promised more, but nothing came for DRAIN_QUIET seconds
            ids.append(properties.message_id)
            self.ch.basic_ack(method.delivery_tag)
            if len(ids) == expected:
                break
        self.ch.cancel()
        return ids
