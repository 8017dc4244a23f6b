"""The cluster script: a 3-node RabbitMQ cluster of its own with quorum queues, and two gateway
replicas that cooperate. Prints one table of every figure; exits 1 when any check failed.

  a  the node gateway A is connected to is killed during 10,000 publishes: no confirmed
     message lost; how long until A serves again
  b  lease from replica A, ack through replica B: 204, and the message is gone
  c  replica A killed (SIGKILL) with leases open: acks through B answer 410 lease_lost, and
     the messages are redelivered
  d  a consumer set created on A is read and settled through B

Started by tests/cluster/run, which passes the binary and the log folder in CLUSTER_* variables.
The fault script's modules (tests/chaos) provide the gateway process, the HTTP client, the
publishing clients and the report.
"""

import json
import os
import queue as work_queue
import secrets
import signal
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import outage  # noqa: E402
from gateway import Gateway, Http, name  # noqa: E402
from nodes import Cluster  # noqa: E402
from report import Report  # noqa: E402
from waits import wait_until  # noqa: E402

MESSAGES = 10_000
CLIENTS = 16
#: Messages confirmed before the node is killed.
KILL_AFTER = 3_000
PUBLISH_DEADLINE = 600
#: Seconds the gateway gets to have every connection on a live node again.
MOVE_DEADLINE = 60
LEASE_SECONDS = 300
SECRET = secrets.token_hex(32)


class Replica(Gateway):
    """A gateway process that advertises its own address to the other replicas."""

    def command(self):
        # The gateway class passes no CARROT_* variable on, so the secret goes as a flag here.
        return [*super().command(), "--advertise-url", f"http://127.0.0.1:{self.port}",
                "--peer-secret", SECRET]

    def nodes(self):
        """The broker nodes of its live connections, from /readyz."""
        answer = self.get("/readyz")
        if not answer or not answer.ok:
            return []
        return [connection["node"] for connection in answer.json().get("connections", [])]

    def kill(self):
        self.signal(signal.SIGKILL)
        self.process.wait(30)


def declare_quorum(node, queue):
    with node.channel() as channel:
        channel.ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})


def drain(node, queue, expected, quiet=10):
    """Consumes `expected` messages (or what comes within `quiet` s of each other): (id,
    redelivered) pairs."""
    seen = []
    with node.channel() as channel:
        channel.ch.basic_qos(prefetch_count=500)
        for method, properties, _ in channel.ch.consume(queue, inactivity_timeout=quiet):
            if method is None:
                break
            seen.append((properties.message_id, method.redelivered))
            channel.ch.basic_ack(method.delivery_tag)
            if len(seen) == expected:
                break
        channel.ch.cancel()
    return seen


def request(gateway, method, path, body=None):
    http = Http(gateway.port)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        return http.request(method, path, json.dumps(body) if body is not None else None, headers)
    finally:
        http.close()


def lease(gateway, queue):
    answer = request(gateway, "GET", f"/queues/{name(queue)}/next?lease={LEASE_SECONDS}")
    if answer.status != 200:
        raise RuntimeError(f"lease from {queue}: {answer.label} {answer.body!r}")
    return answer.json()["receipt"]


def settle(gateway, queue, receipt, how="ack"):
    return request(gateway, "POST", f"/queues/{name(queue)}/messages/{receipt}/{how}")


def a_node_killed(ctx, figures):
    """the node gateway A is connected to is killed during 10,000 publishes"""
    a, cluster = ctx["a"], ctx["cluster"]
    nodes = a.nodes()
    figures.info("gateway A's connection is on", ", ".join(nodes))
    victim = cluster.node_at(nodes[0])
    queue = f"cluster-{ctx['id']}-a"
    # Declared through the victim, so that the queue's leader dies with A's connection.
    declare_quorum(victim, queue)

    tally = outage.Tally()
    work = work_queue.Queue()
    for i in range(MESSAGES):
        work.put((queue, f"{queue}-{i}"))
    killed = {}

    def kill_when_due():
        wait_until(lambda: len(tally.confirmed) >= KILL_AFTER or work.empty(), PUBLISH_DEADLINE)
        killed["at"] = time.monotonic()
        victim.kill()
        if wait_until(lambda: (lambda now: now and victim.address not in now)(a.nodes()),
                      MOVE_DEADLINE) is not None:
            killed["moved"] = time.monotonic() - killed["at"]

    faults = threading.Thread(target=kill_when_due)
    start = time.monotonic()
    clients = [threading.Thread(target=outage.client,
                                args=(a.port, work, tally, start + PUBLISH_DEADLINE))
               for _ in range(CLIENTS)]
    faults.start()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    took = time.monotonic() - start
    faults.join()

    figures.info("publishing took", f"{took:.1f} s, {len(tally.confirmed)} of {MESSAGES} confirmed"
                 f" ({len(tally.confirmed) / took:.0f} msg/s with the kill)")
    at = killed.get("at")
    figures.check("node killed while publishing", f"after {KILL_AFTER} confirms" if at else "no",
                  "yes", at is not None)
    moved = killed.get("moved")
    figures.check("A's connections all on a live node (/readyz), after SIGKILL",
                  f"{moved:.2f} s" if moved is not None else f"not within {MOVE_DEADLINE} s",
                  f"< {MOVE_DEADLINE} s", moved is not None)
    figures.info("A's connections now on", ", ".join(a.nodes()))
    if at is not None:
        stamps = sorted(tally.confirmed_at)
        gaps = [(later - earlier, later) for earlier, later in zip(stamps, stamps[1:])
                if later > at]
        gap, served = max(gaps, default=(0, at))
        figures.info("longest time without a confirm after SIGKILL (clients' outage)",
                     f"{gap:.2f} s")
        figures.info("serving again, after SIGKILL (clients wait Retry-After: 1 s after a 503)",
                     f"{served - at:.2f} s")
    outage.report_answers(figures, tally)

    survivor = next(node for node in cluster.nodes if node is not victim)
    delivered = [message_id for message_id, _ in drain(survivor, queue,
                                                       survivor.ready_count(queue))]
    missing = tally.confirmed - set(delivered)
    figures.check("confirmed (2xx) messages missing", len(missing), "0", not missing)
    if missing:
        figures.info("missing ids (first 10)", " ".join(sorted(missing)[:10]))
    duplicated = len(delivered) - len(set(delivered))
    figures.info("duplicates (ids retried after 503/504 or a failed connection)",
                 f"{duplicated}, of {len(tally.uncertain | tally.refused)} ids retried")


def b_lease_here_ack_there(ctx, figures):
    """lease from replica A, ack through replica B"""
    a, b, node = ctx["a"], ctx["b"], ctx["live_node"]()
    queue = f"cluster-{ctx['id']}-b"
    declare_quorum(node, queue)
    ids = [f"{queue}-{i}" for i in range(100)]
    node.publish(queue, ids)
    receipts = [lease(a, queue) for _ in ids]
    answers = [settle(b, queue, receipt).status for receipt in receipts]
    acked = sum(1 for status in answers if status == 204)
    figures.check("acks through B", f"{acked} of {len(ids)} answered 204", "all 204",
                  acked == len(ids))
    again = settle(b, queue, receipts[0]).label
    figures.check("an ack repeated through B", again, "404 receipt_not_found",
                  again == "404 receipt_not_found")
    ctx["acked_queue"] = queue


def d_consumer_set_elsewhere(ctx, figures):
    """a consumer set created on A is read and settled through B"""
    a, b, node = ctx["a"], ctx["b"], ctx["live_node"]()
    queue = f"cluster-{ctx['id']}-d"
    declare_quorum(node, queue)
    ids = [f"{queue}-{i}" for i in range(20)]
    node.publish(queue, ids)
    created = request(a, "POST", "/consumers", {"queues": [queue], "prefetch": 10, "ack": "lease"})
    figures.check("consumer set created on A", created.label, "201", created.status == 201)
    set_id = created.json()["id"]
    seen, statuses = [], []
    while len(seen) < len(ids):
        answer = request(b, "GET", f"/consumers/{set_id}/next?wait=5")
        if answer.status != 200:
            statuses.append(answer.label)
            break
        message = answer.json()
        seen.append(message["properties"]["message_id"])
        statuses.append(settle(b, message["queue"], message["receipt"]).status)
    figures.check("messages read through B", f"{len(seen)} of {len(ids)}, {len(set(seen))} distinct",
                  f"{len(ids)} distinct", sorted(seen) == sorted(ids))
    figures.check("their acks through B", f"{statuses.count(204)} answered 204", "all 204",
                  statuses.count(204) == len(ids))
    deleted = request(b, "DELETE", f"/consumers/{set_id}")
    figures.check("set deleted through B", deleted.label, "204", deleted.status == 204)
    left = node.ready_count(queue)
    figures.check("messages left in the queue", left, "0", left == 0)


def c_replica_killed(ctx, figures):
    """replica A killed with leases open: acks through B answer 410, messages redelivered"""
    a, b, node = ctx["a"], ctx["b"], ctx["live_node"]()
    queue = f"cluster-{ctx['id']}-c"
    declare_quorum(node, queue)
    ids = [f"{queue}-{i}" for i in range(50)]
    node.publish(queue, ids)
    receipts = [lease(a, queue) for _ in ids]
    a.kill()
    started = time.monotonic()
    labels = [settle(b, queue, receipt).label for receipt in receipts]
    lost = labels.count("410 lease_lost")
    figures.check("acks through B after A was killed", f"{lost} of {len(ids)} 410 lease_lost"
                  + ("" if lost == len(ids) else f"; others: {sorted(set(labels))}"),
                  "all 410 lease_lost", lost == len(ids))
    figures.info("time for those answers", f"{time.monotonic() - started:.2f} s")
    back = drain(node, queue, len(ids))
    redelivered = sum(1 for _, flag in back if flag)
    figures.check("messages redelivered", f"{len(back)} back, {redelivered} marked redelivered",
                  f"{len(ids)}, all redelivered",
                  sorted(i for i, _ in back) == sorted(ids) and redelivered == len(ids))
    if "acked_queue" in ctx:
        left = node.ready_count(ctx["acked_queue"])
        figures.check("b's acked messages after A died", f"{left} back", "0 (they were acked)",
                      left == 0)


SCENARIOS = {
    "b": b_lease_here_ack_there,
    "d": d_consumer_set_elsewhere,
    "a": a_node_killed,
    "c": c_replica_killed,
}


def main(letters):
    binary, logs = os.environ["CLUSTER_GATEWAY"], os.environ["CLUSTER_LOGS"]
    os.makedirs(logs, exist_ok=True)
    report = Report()
    started = time.monotonic()
    print("== starting a 3-node RabbitMQ cluster of the script's own", flush=True)
    with Cluster(logs) as cluster:
        booted = time.monotonic() - started
        print(f"   nodes {', '.join(n.address for n in cluster.nodes)} joined in {booted:.0f} s",
              flush=True)

        def log(label):
            path = os.path.join(logs, f"gateway-{label}.log")
            open(path, "w").close()
            return path

        # A keeps one connection, so the node kill cuts all of its traffic at once.
        a = Replica(binary, cluster.urls(0), log("a"), ["--amqp-connections", "1"])
        b = Replica(binary, cluster.urls(1), log("b"))
        ctx = {
            "a": a, "b": b, "cluster": cluster, "id": secrets.token_hex(3),
            "live_node": lambda: next(node for node in cluster.nodes if node.alive()),
        }
        try:
            a.start()
            b.start()
            for letter in [letter for letter in SCENARIOS if not letters or letter in letters]:
                scenario = SCENARIOS[letter]
                print(f"== {letter}: {scenario.__doc__}", flush=True)
                figures = report.scenario(letter)
                try:
                    scenario(ctx, figures)
                except Exception as error:  # one broken scenario must not hide the others
                    traceback.print_exc()
                    figures.check("scenario completed", f"{type(error).__name__}: {error}",
                                  "no error", False)
        finally:
            a.stop()
            b.stop()
    print(f"\n== all figures ({time.monotonic() - started:.0f} s)\n{report.table()}")
    return 1 if report.failed() else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main(sys.argv[1:]))
