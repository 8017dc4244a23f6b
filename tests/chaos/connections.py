"""Scenario d: floods of idle keep-alive, silent and slow connections against a gateway held to
1,100 file descriptors: normal requests are still answered, the stuck connections are closed
(after their timeouts at the latest), and the gateway's memory stays bounded."""

import asyncio
import itertools
import random
import resource
import statistics
import time
from dataclasses import dataclass

from gateway import Http, declare_queue, metric_text, publish_path
from report import seconds
from waits import wait_until

IDLE = 2_000
SILENT = 1_200
SLOW = 50
#: The gateway's file descriptor limit (soft and hard).
NOFILE = 1_100
#: Given to the gateway when it has the flags: below NOFILE, and short, to keep the run short.
LIMIT_FLAGS = {"--max-connections": 1_000, "--http-header-timeout": 5, "--http-idle-timeout": 10}
#: The gateway's documented defaults, expected when it cannot be given the flags.
DEFAULT_TIMEOUTS = {"--http-header-timeout": 10, "--http-idle-timeout": 60}
#: A normal request is started this often, and must be answered within PROBE_DEADLINE seconds.
#: The gateway returns freed memory within about a second; it gets this long, and this slack.
GIVEN_BACK_DEADLINE = 10
GIVEN_BACK_SLACK_KIB = 10 * 1024
PROBE_EVERY = 0.5
PROBE_DEADLINE = 5
#: Connections being opened at once. An idle client writes its request as soon as it is
#: connected, as a real one does, not after the whole flood has connected.
ARRIVING = 64
#: The seed of the order the kinds of connections arrive in, mixed.
ARRIVAL_ORDER = 1
#: Seconds between two looks at the gateway's memory and open files.
SAMPLE_EVERY = 0.25
METRICS = ("carrot_http_connections_evicted_total", "carrot_http_connections_timed_out_total")
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"
#: What an idle client asks before it goes quiet, keeping the connection.
KEEP_ALIVE = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
#: The start of the header a slow client sends a byte a second; then `a` for ever.
SLOW_START = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: "


@dataclass
class Held:
    """One flooding connection, with the moments (time.monotonic()) it went through."""

    kind: str
    opened: float | None = None
    answered: float | None = None
    closed: float | None = None
    #: The client's port, to find the connection in the kernel's table.
    port: int | None = None
    #: Still open at the deadline: whether the kernel holds it established to the gateway.
    reached: bool = False


@dataclass
class Probe:
    kind: str
    latency: float | None = None
    outcome: str = "not answered"


@dataclass
class Peak:
    rss_kib: int = 0
    open_files: int = 0


async def read_status(reader):
    """The status of the HTTP answer that `reader` starts with."""
    parts = (await reader.readline()).split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ConnectionError("closed without an HTTP answer")
    return int(parts[1])


async def until_closed(reader):
    """Returns when the gateway closes the connection (a reset raises OSError)."""
    while await reader.read(4096):
        pass


async def idle(reader, writer, held):
    """One request, then quiet until closed."""
    writer.write(KEEP_ALIVE)
    if await read_status(reader) == 200:
        held.answered = time.monotonic()
    await until_closed(reader)


async def silent(reader, writer, held):
    """Not a byte."""
    await until_closed(reader)


async def slow(reader, writer, held):
    """A header byte a second, a header that never ends."""
    for byte in itertools.chain(SLOW_START, itertools.repeat(ord("a"))):
        writer.write(bytes([byte]))
        try:
            if not await asyncio.wait_for(reader.read(4096), 1):
                return
        except TimeoutError:
            continue


HANDLERS = {"idle": idle, "silent": silent, "slow": slow}


async def hold(port, held, arriving):
    """Opens one flooding connection and keeps it until the gateway closes it."""
    try:
        async with arriving:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    held.opened = time.monotonic()
    held.port = writer.get_extra_info("sockname")[1]
    try:
        await HANDLERS[held.kind](reader, writer, held)
    except OSError:
        pass
    finally:
        writer.close()
    held.closed = time.monotonic()  # not reached when cancelled at the deadline


async def exchange(port, request):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await read_status(reader)
    finally:
        writer.close()


async def probe(port, kind, request, probes):
    result = Probe(kind)
    probes.append(result)
    start = time.monotonic()
    try:
        status = await asyncio.wait_for(exchange(port, request), PROBE_DEADLINE)
    except TimeoutError:
        result.outcome = f"not answered within {PROBE_DEADLINE} s"
        return
    except OSError as error:
        result.outcome = type(error).__name__
        return
    result.latency = time.monotonic() - start
    result.outcome = str(status)


def publish_request(queue, number):
    body = f"probe-{number}".encode()
    return (f"POST {publish_path('amq.default', queue, f'probe-{number}')} HTTP/1.1\r\n"
            f"Host: gateway\r\nConnection: close\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def every(period, stop):
    """Yields every `period` seconds until `stop` is set."""
    while not stop.is_set():
        yield
        try:
            await asyncio.wait_for(stop.wait(), period)
        except TimeoutError:
            pass


async def keep_probing(port, queue, probes, stop):
    """A health check and a publish, each on a new connection, every PROBE_EVERY seconds."""
    started = []
    number = itertools.count()
    async for _ in every(PROBE_EVERY, stop):
        started.append(asyncio.create_task(probe(port, "healthz", HEALTHZ, probes)))
        request = publish_request(queue, next(number))
        started.append(asyncio.create_task(probe(port, "publish", request, probes)))
    await asyncio.gather(*started)


async def sample(gateway, peak, stop):
    async for _ in every(SAMPLE_EVERY, stop):
        peak.rss_kib = max(peak.rss_kib, gateway.proc_status("VmRSS") or 0)
        peak.open_files = max(peak.open_files, gateway.open_files() or 0)


async def flood(gateway, queue, deadline):
    """Holds every flooding connection until closed or `deadline`, probing meanwhile."""
    held = ([Held("idle") for _ in range(IDLE)] + [Held("silent") for _ in range(SILENT)]
            + [Held("slow") for _ in range(SLOW)])
    random.Random(ARRIVAL_ORDER).shuffle(held)
    probes, peak, stop, arriving = [], Peak(), asyncio.Event(), asyncio.Semaphore(ARRIVING)
    background = [asyncio.create_task(keep_probing(gateway.port, queue, probes, stop)),
                  asyncio.create_task(sample(gateway, peak, stop))]
    connections = [asyncio.create_task(hold(gateway.port, one, arriving)) for one in held]
    _, pending = await asyncio.wait(connections, timeout=deadline)
    established = established_from(gateway.port)
    for one in held:
        one.reached = one.closed is None and one.port in established
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stop.set()
    await asyncio.gather(*background)
    return held, probes, peak


def established_from(server_port):
    """Client ports of the connections the kernel holds established to `server_port`.

    A client whose handshake the kernel dropped (its accept queue was full) still thinks it is
    connected, yet is not here: the gateway never had it.
    """
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                lines = rows.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, remote, state = line.split()[1:4]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(remote.rsplit(":", 1)[1], 16))
    return ports


def raise_own_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE + SILENT + SLOW + 1_000
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(f"this process may open only {hard} files; the flood needs {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def gateway_limits(ctx, figures):
    """The flags to start the gateway with, and the timeouts to expect from it."""
    missing = [flag for flag in LIMIT_FLAGS if flag not in ctx.flags]
    figures.check("binary has the HTTP limit flags",
                  "yes" if not missing else "missing " + ", ".join(missing),
                  ", ".join(LIMIT_FLAGS), not missing)
    args = [str(part) for flag, value in LIMIT_FLAGS.items() if flag in ctx.flags
            for part in (flag, value)]
    expected = {flag: LIMIT_FLAGS[flag] if flag in ctx.flags else default
                for flag, default in DEFAULT_TIMEOUTS.items()}
    figures.info("gateway started with", " ".join([f"nofile {NOFILE}", *args]))
    return args, expected["--http-header-timeout"], expected["--http-idle-timeout"]


def report_held(figures, held, kind, since, timeout):
    mine = [one for one in held if one.kind == kind]
    opened = [one for one in mine if one.opened is not None]
    closed = [one for one in opened if one.closed is not None]
    left_open = sum(1 for one in opened if one.reached)
    dropped = len(opened) - len(closed) - left_open
    figures.check(f"{kind} connections left open by the gateway",
                  f"{left_open} of {len(opened)} opened ({len(mine)} tried"
                  + (f"; {dropped} more never reached it: handshake dropped by the kernel)"
                     if dropped else ")"),
                  "0", opened and not left_open)
    figures.info(f"{kind}: seconds from {since} to close, min / p50 / max (timeout {timeout} s)",
                 seconds([one.closed - (one.answered or one.opened) for one in closed]))


def report_probes(figures, probes, kind):
    mine = [one for one in probes if one.kind == kind]
    answered = [one.latency for one in mine if one.outcome == "200"]
    failures = sorted({one.outcome for one in mine if one.outcome != "200"})
    figures.check(f"{kind} requests meanwhile answered 200",
                  f"{len(answered)} of {len(mine)}" + (f" ({'; '.join(failures)})" if failures else ""),
                  f"all, each within {PROBE_DEADLINE} s", mine and len(answered) == len(mine))
    figures.info(f"{kind} latency p50 / max",
                 f"{statistics.median(answered):.3f} / {max(answered):.3f} s" if answered else "-")
    return len(answered)


def mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib else "-"


def run(ctx, figures):
    """2,000 idle, 1,200 silent and 50 slow connections, 1,100 descriptors: others still served."""
    raise_own_file_limit()
    args, header_timeout, idle_timeout = gateway_limits(ctx, figures)
    deadline = 3 * (header_timeout + idle_timeout) + 30
    queue = ctx.names("d-probes")
    with ctx.gateway("d-connections", args, nofile=NOFILE) as gateway:
        http = Http(gateway.port)
        declare_queue(http, queue)
        http.close()
        rss_before = gateway.proc_status("VmRSS")
        held, probes, peak = asyncio.run(flood(gateway, queue, deadline))
        rss_after = gateway.proc_status("VmRSS")
        rss_high = gateway.proc_status("VmHWM")
        # Freed memory goes back to the system within about a second: wait for it, bounded.
        given_back = wait_until(
            lambda: (gateway.proc_status("VmRSS") or 0) <= rss_before + GIVEN_BACK_SLACK_KIB,
            GIVEN_BACK_DEADLINE,
        )
        rss_settled = gateway.proc_status("VmRSS")
        alive = gateway.running()
        values = gateway.metrics()
    figures.info("flood deadline", f"{deadline} s")
    report_held(figures, held, "idle", "answer", idle_timeout)
    figures.info("idle connections whose request was answered",
                 f"{sum(1 for one in held if one.answered)} of {IDLE}")
    report_held(figures, held, "silent", "connect", header_timeout)
    report_held(figures, held, "slow", "connect", header_timeout)
    report_probes(figures, probes, "healthz")
    published = report_probes(figures, probes, "publish")
    arrived = ctx.node.ready_count(queue)
    figures.check("answered publishes arrived", f"{arrived} of {published}", "all",
                  arrived == published)
    figures.info("gateway RSS before / peak (VmHWM) / when the flood ended",
                 f"{mib(rss_before)} / {mib(max(peak.rss_kib, rss_high or 0))} / {mib(rss_after)}")
    figures.check(
        "gateway RSS given back",
        f"{mib(rss_settled)}"
        + (f", {given_back:.1f} s after the flood" if given_back is not None else " (not back)"),
        f"within {GIVEN_BACK_SLACK_KIB // 1024} MiB of before, in {GIVEN_BACK_DEADLINE} s",
        given_back is not None,
    )
    figures.info("gateway open files at peak", f"{peak.open_files} (limit {NOFILE})")
    for metric in METRICS:
        figures.info(metric, metric_text(values, metric))
    figures.check("gateway still running", "yes" if alive else "no", "yes", alive)
