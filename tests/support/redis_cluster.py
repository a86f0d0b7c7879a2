"""A private Redis Cluster on free loopback ports: three primaries, no replicas.

Each node is a ``RedisServer`` started with ``--cluster-enabled yes``; ``redis-cli
--cluster create`` assigns the slots, and the cluster is ready once every node says
``cluster_state:ok``. Nothing is persisted, as for the single server. Faults act on one
node (``kill``/``restart`` a primary, SIGSTOP it) or on the slots (``move_slots``, a
``redis-cli --cluster reshard``).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time

import redis

from tests.support.redis_server import RedisServer

__all__ = ["RedisCluster"]


def _node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randrange(20_000, 45_000)
        if all(_free(candidate) for candidate in (port, port + 10_000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisCluster:
    def __init__(self, primaries: int = 3, *, extra_args: tuple[str, ...] = ()) -> None:
        """``extra_args`` go to every node (e.g. AOF, for a primary that restarts)."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        self.cli = cli
        self.nodes = [
            RedisServer(
                _node_port(),
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    *extra_args,
                ),
            )
            for _ in range(primaries)
        ]

    @property
    def url(self) -> str:
        """One seed node, as an operator writes REDIS_URL in cluster mode."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        self._cli("--cluster", "create", *self.addresses, "--cluster-replicas", "0")
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node reports ``cluster_state:ok`` and knows all the others."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._state_ok(node) for node in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def _state_ok(self, node: RedisServer) -> bool:
        if not node.ping():
            return False
        info = self._cli("-p", str(node.port), "cluster", "info", check=False)
        known = f"cluster_known_nodes:{len(self.nodes)}"
        return "cluster_state:ok" in info and known in info

    def node_for_slot(self, slot: int) -> RedisServer:
        """The primary serving ``slot`` now."""
        with redis.Redis(port=self.nodes[0].port) as client:
            slots = client.execute_command("CLUSTER", "SLOTS")
        for start, end, primary, *_replicas in slots:
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == int(primary[1]))
        raise LookupError(f"no node serves slot {slot}")

    def node_ids(self) -> dict[int, str]:
        """Port -> cluster node id of every node."""
        ids = {}
        for node in self.nodes:
            ids[node.port] = self._cli("-p", str(node.port), "cluster", "myid").strip()
        return ids

    def move_slots(self, source: RedisServer, target: RedisServer, count: int) -> None:
        """``redis-cli --cluster reshard``: ``count`` slots (with their keys) move now."""
        ids = self.node_ids()
        self._cli(
            "--cluster",
            "reshard",
            self.addresses[0],
            "--cluster-from",
            ids[source.port],
            "--cluster-to",
            ids[target.port],
            "--cluster-slots",
            str(count),
            "--cluster-pipeline",
            "10",
        )

    def flush(self) -> None:
        """Remove every key on every primary (the tests' own cluster)."""
        for node in self.nodes:
            self._cli("-p", str(node.port), "flushall")

    def stop(self) -> None:
        for node in self.nodes:
            node.close()

    def _cli(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [self.cli, "-h", "127.0.0.1", *args, "--cluster-yes"]
            if args[0] == "--cluster"
            else [self.cli, "-h", "127.0.0.1", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args[:3])}: {done.stdout}{done.stderr}")
        return done.stdout

    def __enter__(self) -> RedisCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
