"""Scenarios b and c: messages leased through the gateway and never settled go back to their
queue when the gateway dies (kill -9) or is stopped (SIGTERM)."""

import signal

from gateway import Http, declare_queue, name
from waits import wait_until

LEASES = 200
#: Seconds a lease asks for: far longer than the scenario, so that only the fault returns them.
LEASE_SECONDS = 600
#: Seconds the broker gets to put the messages of a killed gateway back.
REQUEUE_DEADLINE = 30
#: The gateway's --shutdown-grace in scenario c.
GRACE = 5
#: Seconds a killed gateway gets to be reaped.
KILL_DEADLINE = 10


def open_leases(ctx, gateway, label, figures):
    """Publishes LEASES messages with the AMQP client and leases them all through the gateway.

    Returns the queue's name once the broker holds every one of them unacknowledged.
    """
    queue = ctx.names(label)
    http = Http(gateway.port)
    declare_queue(http, queue)
    ctx.node.publish(queue, [f"{queue}-{i}" for i in range(LEASES)])
    path = f"/queues/{name(queue)}/next?ack=lease&lease={LEASE_SECONDS}"
    receipts = [answer.json().get("receipt") for answer in
                (http.request("GET", path) for _ in range(LEASES)) if answer.status == 200]
    http.close()
    leased = sum(1 for receipt in receipts if receipt)
    ready = ctx.node.ready_count(queue)
    figures.check("leases open (ready in the queue)", f"{leased} ({ready})",
                  f"{LEASES} (0)", leased == LEASES and ready == 0)
    return queue


def run_kill(ctx, figures):
    """gateway kill -9 with 200 leases open: all 200 messages are back in their queue."""
    with ctx.gateway("b-kill") as gateway:
        queue = open_leases(ctx, gateway, "b-kill", figures)
        gateway.signal(signal.SIGKILL)
        gateway.wait_exit(KILL_DEADLINE)
        took = wait_until(lambda: ctx.node.ready_count(queue) == LEASES, REQUEUE_DEADLINE)
    ready = ctx.node.ready_count(queue)
    when = f"after {took:.2f} s" if took is not None else f"after {REQUEUE_DEADLINE} s"
    figures.check("messages back in the queue after kill -9", f"{ready} {when}",
                  f"{LEASES} within {REQUEUE_DEADLINE} s", took is not None)


def run_term(ctx, figures):
    """SIGTERM with 200 leases open: the gateway exits within its grace, leases requeued first."""
    with ctx.gateway("c-term", ["--shutdown-grace", str(GRACE)]) as gateway:
        queue = open_leases(ctx, gateway, "c-term", figures)
        gateway.signal(signal.SIGTERM)
        took = gateway.wait_exit(GRACE + REQUEUE_DEADLINE)
        # At once, no waiting: the gateway promises to requeue them before it exits.
        ready = ctx.node.ready_count(queue) if took is not None else None
        code = gateway.process.returncode
    figures.check("exit after SIGTERM", f"{took:.2f} s, code {code}" if took is not None
                  else f"still running after {GRACE + REQUEUE_DEADLINE} s",
                  f"within the {GRACE} s grace, code 0", took is not None and took <= GRACE and code == 0)
    figures.check("messages in the queue right after exit", ready, str(LEASES), ready == LEASES)
