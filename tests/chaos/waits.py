"""Waiting for a condition with a deadline: the only way the fault script waits for anything."""

import time

#: Seconds between two looks at a condition.
POLL = 0.05


def wait_until(condition, deadline, every=POLL):
    """Polls `condition` until it holds or `deadline` seconds have passed.

    Returns the seconds it took, or None when the deadline passed first.
    """
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start >= deadline:
            return None
        time.sleep(every)
