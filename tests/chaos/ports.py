"""Free loopback TCP ports for the script's own broker node and gateways.

Ports come from below the kernel's ephemeral range, so that no process binding port 0 meanwhile
(other test suites start servers that way) can be handed the same one. Run as a program, it
prints as many distinct free ports as its argument asks for, one a line.
"""

import random
import socket
import sys


def ephemeral_low():
    """The first port of the kernel's ephemeral range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def is_free(port):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count, taken=()):
    """`count` distinct free ports, none of them in `taken`."""
    high = ephemeral_low()
    low = 10000 if high > 11000 else 1024
    candidates = [port for port in range(low, high) if port not in taken]
    random.shuffle(candidates)
    found = [port for port in candidates[: 200 + count] if is_free(port)][:count]
    if len(found) < count:
        raise RuntimeError(f"found only {len(found)} free ports below {high}")
    return found


def free_port():
    return free_ports(1)[0]


if __name__ == "__main__":
    print("\n".join(str(port) for port in free_ports(int(sys.argv[1]))))
