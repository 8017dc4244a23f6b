"""Scenario e: 10,000 requests the broker refuses (missing queues and exchanges), mixed with and
followed by normal traffic from the same 8 clients: every answer names only its own request's
names, and every publish to an existing queue is confirmed and arrives."""

import queue as work_queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

from gateway import Http, TransportError, declare_queue, name, publish, publish_path

REFUSED = 10_000
CLIENTS = 8
#: One publish to an existing queue after this many refused requests, while they go on.
GOOD_EVERY = 5
#: Requests of the normal traffic that follows: publishes, and as many looks at the queue.
NORMAL = 1_000
#: Seconds all requests may take; those not sent by then count as wrong answers.
REQUESTS_DEADLINE = 600


@dataclass
class Request:
    kind: str
    #: The name this request is about (a missing queue or exchange, or the existing queue).
    name: str
    message_id: str = ""


def refused_requests(ctx):
    """Half GET of a missing queue, half publish to a missing exchange, each name unique."""
    for i in range(REFUSED):
        if i % 2:
            yield Request("missing exchange", ctx.names(f"missing-x-{i}"), f"refused-{i}")
        else:
            yield Request("missing queue", ctx.names(f"missing-q-{i}"))


def requests(ctx, queue):
    """The refused ones with publishes in between, then the normal traffic."""
    for i, request in enumerate(refused_requests(ctx), 1):
        yield request
        if i % GOOD_EVERY == 0:
            yield Request("publish", queue, f"{queue}-mixed-{i}")
    for i in range(NORMAL):
        yield Request("publish", queue, f"{queue}-normal-{i}")
        yield Request("look at queue", queue)


def send(http, request):
    if request.kind == "missing queue":
        return http.request("GET", f"/queues/{name(request.name)}")
    if request.kind == "missing exchange":
        return http.request("POST", publish_path(request.name, "key", request.message_id),
                            b"refused", {"content-type": "text/plain"})
    if request.kind == "publish":
        return publish(http, request.name, request.message_id)
    return http.request("GET", f"/queues/{name(request.name)}")


EXPECTED = {
    "missing queue": (404, "queue_not_found"),
    "missing exchange": (404, "exchange_not_found"),
    "publish": (200, None),
    "look at queue": (200, None),
}


def judge(request, answer, names):
    """`ok`, `cross-talk` (it names another request's names), or what was wrong."""
    text = answer.body.decode(errors="replace")
    if any(found != request.name for found in names.findall(text)):
        return "cross-talk"
    status, code = EXPECTED[request.kind]
    if answer.status != status or answer.problem.get("code") != code:
        return f"{request.kind}: {answer.label}"
    if status == 404 and request.name not in answer.problem.get("detail", ""):
        return f"{request.kind}: detail does not name it"
    if request.kind == "publish" and answer.json() != {"routed": True}:
        return f"publish: {answer.body[:80]!r}"
    if request.kind == "look at queue" and answer.json().get("name") != request.name:
        return f"look at queue: {answer.body[:80]!r}"
    return "ok"


def verdict_of(http, request, names, deadline):
    if time.monotonic() > deadline:
        return f"{request.kind}: not sent within {REQUESTS_DEADLINE} s"
    try:
        return judge(request, send(http, request), names)
    except TransportError as error:
        return f"{request.kind}: connection failed ({error})"
    except ValueError:
        return f"{request.kind}: a 200 whose body is not JSON"


def client(port, work, names, verdicts, confirmed, lock, deadline):
    http = Http(port)
    while True:
        try:
            request = work.get_nowait()
        except work_queue.Empty:
            break
        verdict = verdict_of(http, request, names, deadline)
        with lock:
            verdicts[verdict] += 1
            if verdict == "ok" and request.kind == "publish":
                confirmed.add(request.message_id)
    http.close()


def run(ctx, figures):
    """10,000 refused requests, then normal traffic: no answer names another request's names."""
    queue = ctx.names("e-existing")
    # Every name of this scenario, the existing queue's included, matches this.
    names = re.compile(re.escape(ctx.names("")) + r"(?:missing-[qx]-\d+|e-existing)")
    work = work_queue.Queue()
    for request in requests(ctx, queue):
        work.put(request)
    verdicts, confirmed, lock = Counter(), set(), threading.Lock()
    with ctx.gateway("e-refusals") as gateway:
        http = Http(gateway.port)
        declare_queue(http, queue)
        http.close()
        deadline = time.monotonic() + REQUESTS_DEADLINE
        clients = [threading.Thread(target=client, args=(gateway.port, work, names, verdicts,
                                                         confirmed, lock, deadline))
                   for _ in range(CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    figures.info("requests", f"{sum(verdicts.values())} ({REFUSED} refused by the broker)")
    figures.check("answers naming another request's names", verdicts["cross-talk"], "0",
                  verdicts["cross-talk"] == 0)
    wrong = {verdict: n for verdict, n in verdicts.items() if verdict not in ("ok", "cross-talk")}
    listing = "".join(f"; {verdict} x{n}" for verdict, n in wrong.items())
    figures.check("other wrong answers", f"{sum(wrong.values())}{listing}", "0", not wrong)
    delivered = Counter(ctx.node.drain(queue))
    missing = confirmed - delivered.keys()
    figures.check("confirmed publishes missing", f"{len(missing)} of {len(confirmed)}", "0",
                  not missing)
    figures.info("publishes delivered twice", sum(1 for n in delivered.values() if n > 1))
