"""The fault script: runs the chosen scenarios against the script's own broker node and prints one
table of every figure; exits 1 when any check failed.

Started by tests/chaos/run, which passes the node and the binary in CHAOS_* variables.
"""

import os
import secrets
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field

import connections
import leases
import outage
import refusals
from broker import Node
from gateway import Gateway, help_flags
from report import Report

SCENARIOS = {
    "a": outage.run,
    "b": leases.run_kill,
    "c": leases.run_term,
    "d": connections.run,
    "e": refusals.run,
}


@dataclass
class Context:
    """What every scenario is given: the node, the binary and what it can do, where logs go."""

    node: Node
    binary: str
    logs: str
    flags: set = field(default_factory=set)
    #: A prefix that keeps this run's names apart from any earlier run's.
    id: str = field(default_factory=lambda: secrets.token_hex(3))

    def gateway(self, label, args=(), nofile=None):
        log = os.path.join(self.logs, f"gateway-{label}.log")
        open(log, "w").close()  # this run's log only
        return Gateway(self.binary, self.node.amqp_url, log, args, nofile)

    def names(self, label):
        return f"chaos-{self.id}-{label}"


def main(letters):
    ctx = Context(
        node=Node(os.environ["CHAOS_NODE"], int(os.environ["CHAOS_AMQP_PORT"]),
                  os.environ.get("CHAOS_RABBITMQCTL", "rabbitmqctl")),
        binary=os.environ["CHAOS_GATEWAY"],
        logs=os.environ["CHAOS_LOGS"],
    )
    ctx.flags = help_flags(ctx.binary)
    report = Report()
    started = time.monotonic()
    for letter in dict.fromkeys(letters or sorted(SCENARIOS)):
        scenario = SCENARIOS[letter]
        print(f"== {letter}: {scenario.__doc__.splitlines()[0]}", flush=True)
        figures = report.scenario(letter)
        try:
            scenario(ctx, figures)
        except Exception as error:  # one broken scenario must not hide the others' figures
            traceback.print_exc()
            figures.check("scenario completed", f"{type(error).__name__}: {error}", "no error", False)
    print(f"\n== all figures ({time.monotonic() - started:.0f} s)\n{report.table()}")
    return 1 if report.failed() else 0


if __name__ == "__main__":
    # Stopped from outside: unwind, so that every gateway started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main(sys.argv[1:]))
