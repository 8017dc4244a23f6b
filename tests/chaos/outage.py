"""Scenario a: the broker's app is stopped and started twice while 32 keep-alive clients publish
20,000 messages, half to a classic and half to a quorum queue; every message the gateway
confirmed (2xx) is then read back by the independent AMQP client."""

import queue as work_queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from gateway import Http, TransportError, declare_queue, metric_text, publish, retry_after
from waits import wait_until

MESSAGES = 20_000
CLIENTS = 32
#: Share of the messages settled when the broker is told to stop, once per restart. Early,
#: because rabbitmqctl needs seconds to start on a loaded machine while publishing goes on.
FAULTS_AT = (0.1, 0.4)
#: Seconds all publishing may take; a message not confirmed by then is given up.
PUBLISH_DEADLINE = 600
#: Seconds the gateway gets to notice a stopped broker (/readyz 503) before it is started again.
OUTAGE_SEEN_DEADLINE = 20
#: Seconds the publishing may take to reach the next fault's share.
PROGRESS_DEADLINE = 300
#: Pause before retrying a publish whose connection failed, so a dead gateway is not spun on.
TRANSPORT_RETRY_PAUSE = 0.1
METRICS = ("carrot_broker_reconnects_total", "carrot_broker_connections_lost_total",
           "carrot_broker_channels_closed_total")


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    confirmed: set = field(default_factory=set)
    #: Ids that got at least one answer with an unknown outcome (504, a failed connection, ...).
    uncertain: set = field(default_factory=set)
    #: Ids that got at least one 503, which promises that the message was not sent.
    refused: set = field(default_factory=set)
    gave_up: set = field(default_factory=set)
    answers: Counter = field(default_factory=Counter)
    #: When each 2xx arrived (time.monotonic()).
    confirmed_at: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settled(self):
        return len(self.confirmed) + len(self.gave_up)

    def confirm(self, message_id):
        with self.lock:
            self.confirmed.add(message_id)
            self.confirmed_at.append(time.monotonic())

    def note(self, message_id, label, uncertain):
        with self.lock:
            self.answers[label] += 1
            (self.uncertain if uncertain else self.refused).add(message_id)

    def give_up(self, message_id):
        with self.lock:
            self.gave_up.add(message_id)

    def first_confirm_after(self, moment):
        return min((at for at in self.confirmed_at if at > moment), default=None)


@dataclass
class Restart:
    stop_took: float
    #: Messages not yet confirmed when the gateway reported the outage (None: it never did).
    unsettled: int | None
    started_at: float
    start_took: float


def publish_until_confirmed(http, queue, message_id, tally, deadline):
    """Publishes one message until a 2xx: after Retry-After on 503, at once on anything else."""
    while time.monotonic() < deadline:
        try:
            answer = publish(http, queue, message_id)
        except TransportError:
            tally.note(message_id, "connection failed", uncertain=True)
            time.sleep(TRANSPORT_RETRY_PAUSE)
            continue
        if answer.ok:
            tally.confirm(message_id)
            return
        # 503 means not sent; anything else (504 above all) leaves the outcome unknown.
        tally.note(message_id, answer.label, uncertain=answer.status != 503)
        if answer.status == 503:
            time.sleep(retry_after(answer))
    tally.give_up(message_id)


def client(port, work, tally, deadline):
    http = Http(port)
    while True:
        try:
            queue, message_id = work.get_nowait()
        except work_queue.Empty:
            break
        publish_until_confirmed(http, queue, message_id, tally, deadline)
    http.close()


def inject_faults(ctx, gateway, tally, done, restarts):
    """At each share of FAULTS_AT: stop_app, wait until the gateway sees it, start_app, and wait
    until it serves a publish again."""
    for share in FAULTS_AT:
        wanted = share * MESSAGES
        wait_until(lambda: tally.settled() >= wanted or done.is_set(), PROGRESS_DEADLINE)
        if done.is_set():
            return
        stop_took = ctx.node.stop_app()
        unsettled = None
        try:
            if wait_until(lambda: gateway.readyz() == 503, OUTAGE_SEEN_DEADLINE) is not None:
                unsettled = MESSAGES - tally.settled()
        finally:
            started_at = time.monotonic()
            restarts.append(Restart(stop_took, unsettled, started_at, ctx.node.start_app()))
        wait_until(lambda: tally.first_confirm_after(started_at) or done.is_set(),
                   PROGRESS_DEADLINE)


def publish_all(ctx, gateway, queues, tally):
    """Runs the clients and the faults; returns the restarts and the seconds it all took."""
    work = work_queue.Queue()
    for i in range(MESSAGES):
        queue = queues[i % 2]
        work.put((queue, f"{queue}-{i}"))
    done = threading.Event()
    restarts = []
    faults = threading.Thread(target=inject_faults, args=(ctx, gateway, tally, done, restarts))
    start = time.monotonic()
    clients = [threading.Thread(target=client,
                                args=(gateway.port, work, tally, start + PUBLISH_DEADLINE))
               for _ in range(CLIENTS)]
    faults.start()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    took = time.monotonic() - start
    done.set()
    faults.join()
    return restarts, took


def report_restarts(figures, tally, restarts):
    during = sum(1 for restart in restarts if restart.unsettled)
    figures.check("broker restarts seen by the gateway while publishing", during,
                  str(len(FAULTS_AT)), during == len(FAULTS_AT))
    for number, restart in enumerate(restarts, 1):
        served = tally.first_confirm_after(restart.started_at)
        figures.info(f"restart {number}: stop_app took", f"{restart.stop_took:.2f} s, "
                     + (f"/readyz 503 with {restart.unsettled} messages to go"
                        if restart.unsettled is not None else "/readyz never said 503"))
        figures.info(f"restart {number}: first publish served after start_app began",
                     (f"{served - restart.started_at:.2f} s" if served else "never")
                     + f" (start_app returned after {restart.start_took:.2f} s)")


def per_queue(ids, queues):
    """`n (classic a, quorum b)`: how many of `ids` went to each queue."""
    split = ", ".join(f"{kind} {sum(1 for i in ids if i.startswith(queue + '-'))}"
                      for kind, queue in zip(("classic", "quorum"), queues))
    return f"{len(ids)} ({split})"


def report_readback(figures, tally, queues, delivered):
    counts = Counter(delivered)
    missing = tally.confirmed - counts.keys()
    duplicated = {message_id for message_id, n in counts.items() if n > 1}
    figures.check("confirmed (2xx) messages missing", per_queue(missing, queues), "0",
                  not missing)
    if missing:
        figures.info("missing ids (first 10)", " ".join(sorted(missing)[:10]))
    uncertain = duplicated & tally.uncertain
    refused = duplicated & tally.refused - uncertain
    figures.info("duplicates, ids that had a 504 or a failed connection",
                 per_queue(uncertain, queues))
    figures.info("duplicates, ids that had only 503s before their 2xx", per_queue(refused, queues))
    if refused:
        figures.info("ids sent although answered 503 (first 5)", " ".join(sorted(refused)[:5]))
    figures.info("duplicates, ids confirmed at their first attempt",
                 per_queue(duplicated - uncertain - refused, queues))
    figures.info("unconfirmed messages delivered anyway",
                 per_queue(counts.keys() - tally.confirmed, queues))


def report_answers(figures, tally):
    def count(prefix):
        return sum(n for label, n in tally.answers.items() if label.startswith(prefix))

    codes = ", ".join(f"{label.removeprefix('503 ')} x{n}"
                      for label, n in sorted(tally.answers.items()) if label.startswith("503"))
    figures.info("503 answers", f"{count('503')} ({codes or 'none'})")
    figures.info("504 answers", count("504"))
    others = sum(tally.answers.values()) - count("503") - count("504")
    figures.check("other answers and failed connections", others, "0", others == 0)
    figures.check(f"messages not confirmed within {PUBLISH_DEADLINE} s", len(tally.gave_up), "0",
                  not tally.gave_up)


def run(ctx, figures):
    """broker stop_app/start_app twice during 20,000 publishes: no confirmed message lost."""
    queues = (ctx.names("a-classic"), ctx.names("a-quorum"))
    tally = Tally()
    with ctx.gateway("a-outage") as gateway:
        http = Http(gateway.port)
        declare_queue(http, queues[0])
        declare_queue(http, queues[1], quorum=True)
        http.close()
        restarts, took = publish_all(ctx, gateway, queues, tally)
        values = gateway.metrics()
    figures.info("publishing took", f"{took:.1f} s, {len(tally.confirmed)} of {MESSAGES} confirmed")
    report_restarts(figures, tally, restarts)
    report_answers(figures, tally)
    for metric in METRICS:
        figures.info(metric, metric_text(values, metric))
    delivered = ctx.node.drain(queues[0]) + ctx.node.drain(queues[1])
    report_readback(figures, tally, queues, delivered)
