"""A RabbitMQ cluster of the script's own: three nodes on their own ports, data and log folders,
joined into one cluster. The machine's broker (and its port 5672) is never touched.

RabbitMQ's scripts run as root or as the rabbitmq user, and run the node as that user, so the
folders are handed to that user; all nodes share that user's Erlang cookie, which is how they
and rabbitmqctl reach one another.
"""

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

from broker import Node
from ports import free_ports

#: Seconds a node gets to boot, to join, and to stop.
START_DEADLINE = 120
STOP_DEADLINE = 60


def as_broker_user():
    """The prefix that runs RabbitMQ's scripts with the rights they need."""
    if os.geteuid() == 0 or os.environ.get("USER") == "rabbitmq":
        return []
    if shutil.which("sudo"):
        return ["sudo"]
    raise RuntimeError("rabbitmq-server and rabbitmqctl need root, the rabbitmq user or sudo")


class ClusterNode(Node):
    """One node: started detached, stopped and its folder removed by `remove`."""

    def __init__(self, name, amqp_port, dist_port, folder, prefix):
        super().__init__(name, amqp_port, " ".join([*prefix, "rabbitmqctl"]))
        self.dist_port = dist_port
        self.folder = folder
        self.prefix = prefix
        self.pid_file = os.path.join(folder, "mnesia", f"{name}.pid")

    @property
    def address(self):
        """host:port, as the gateway's /readyz names a node."""
        return f"127.0.0.1:{self.amqp_port}"

    def run(self, *command, check=True, timeout=START_DEADLINE):
        return subprocess.run([*self.prefix, *command], check=check, timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def write_files(self):
        os.makedirs(os.path.join(self.folder, "mnesia"))
        os.makedirs(os.path.join(self.folder, "log"))
        with open(os.path.join(self.folder, "enabled_plugins"), "w") as plugins:
            plugins.write("[].\n")
        with open(os.path.join(self.folder, "rabbitmq.conf"), "w") as conf:
            conf.write(f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}\n")
        with open(os.path.join(self.folder, "rabbitmq-env.conf"), "w") as env:
            env.write("ERL_EPMD_ADDRESS=127.0.0.1\n"
                      'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n')
        if self.prefix or os.geteuid() == 0:
            self.run("chown", "-R", "rabbitmq:rabbitmq", self.folder)

    def start(self):
        self.write_files()
        environment = {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.folder, "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.folder, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.folder, "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.folder, "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.folder, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.folder, "log"),
            "ERL_CRASH_DUMP": os.path.join(self.folder, "erl_crash.dump"),
        }
        self.run("env", *[f"{key}={value}" for key, value in environment.items()],
                 "rabbitmq-server", "-detached")

    def wait_booted(self):
        """Follows the pid file until the node has booted (or its process died)."""
        answer = self.run("rabbitmqctl", "-q", "-n", self.name, "wait", self.pid_file,
                          "--timeout", str(START_DEADLINE), check=False,
                          timeout=START_DEADLINE + 10)
        if answer.returncode != 0:
            raise RuntimeError(f"node {self.name} did not start: {answer.stderr.strip()}\n"
                               f"{self.log_tail()}")

    def join(self, first):
        for command in (("stop_app",), ("join_cluster", first.name), ("start_app",)):
            self.ctl(*command)

    def kill(self):
        """SIGKILL to the node's Erlang VM: it dies as a crashed machine would, at once."""
        pid = self.read_pid()
        if pid:
            self.run("kill", f"-{signal.SIGKILL.value}", str(pid), check=False, timeout=10)
        return pid

    def read_pid(self):
        answer = subprocess.run([*self.prefix, "cat", self.pid_file], capture_output=True,
                                text=True, timeout=10, check=False)
        try:
            return int(answer.stdout.strip())
        except ValueError:
            return None

    def alive(self):
        pid = self.read_pid()
        return pid is not None and subprocess.run([*self.prefix, "kill", "-0", str(pid)],
                                                  capture_output=True, check=False).returncode == 0

    def log_tail(self, lines=20):
        log = os.path.join(self.folder, "log", f"{self.name}.log")
        answer = subprocess.run([*self.prefix, "tail", "-n", str(lines), log],
                                capture_output=True, text=True, check=False)
        return answer.stdout

    def remove(self, logs):
        if self.alive():
            self.run("rabbitmqctl", "-q", "-n", self.name, "stop", self.pid_file, check=False,
                     timeout=STOP_DEADLINE)
            deadline = time.monotonic() + STOP_DEADLINE
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.kill()
        os.makedirs(logs, exist_ok=True)
        log = os.path.join(self.folder, "log", f"{self.name}.log")
        with open(os.path.join(logs, f"{self.name.split('@')[0]}.log"), "w") as copy:
            subprocess.run([*self.prefix, "cat", log], stdout=copy, stderr=subprocess.DEVNULL,
                           check=False)
        subprocess.run([*self.prefix, "rm", "-rf", self.folder], check=False)


class Cluster:
    """Three nodes joined to the first; `with` removes them however the script ends."""

    def __init__(self, logs, size=3):
        self.logs = logs
        prefix = as_broker_user()
        label = secrets.token_hex(3)
        ports = free_ports(2 * size)
        self.nodes = [
            ClusterNode(f"carrot-cluster-{label}-{n}@localhost", ports[2 * n], ports[2 * n + 1],
                        tempfile.mkdtemp(prefix=f"carrot-cluster-{label}-{n}."), prefix)
            for n in range(size)
        ]
        for node in self.nodes:
            os.rmdir(node.folder)  # write_files makes it, owned as the node needs

    def __enter__(self):
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_booted()
            for node in self.nodes[1:]:
                node.join(self.nodes[0])
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_):
        for node in self.nodes:
            node.remove(self.logs)

    def urls(self, first=0):
        """Every node's URL, comma-separated, starting at node `first`."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.amqp_url for node in order)

    def node_at(self, address):
        return next(node for node in self.nodes if node.address == address)
