"""A Redis Cluster of the demo's own (``groq-worker demo --cluster``): started, joined, stopped.

Three primaries by default, each a server of ``launch_server`` (``app.cli.demo.server``)
with cluster mode on, joined by ``redis-cli --cluster create`` without replicas. Leaving
the ``with`` block stops every node and removes their directories. A cluster that cannot
be made (no ``redis-cli``, no free ports, a failed join, a state that is not ``ok`` in
time) raises :class:`ServerUnavailable` with the reason on one line.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from app.cli.demo.server import (
    LOOPBACK,
    START_TIMEOUT_SECONDS,
    LaunchedServer,
    ServerUnavailable,
    find_server_binary,
    free_port,
    launch_server,
)

__all__ = ["LaunchedCluster", "launch_cluster"]

_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class LaunchedCluster:
    """A Redis Cluster started by :func:`launch_cluster`: its primaries, the first the seed."""

    nodes: list[LaunchedServer]

    @property
    def seed(self) -> LaunchedServer:
        return self.nodes[0]

    @property
    def url(self) -> str:
        """REDIS_URL of the cluster (its first node; the client discovers the others)."""
        return self.seed.url


@contextlib.contextmanager
def launch_cluster(
    primaries: int = 3, *, timeout: float = START_TIMEOUT_SECONDS
) -> Iterator[LaunchedCluster]:
    """Start ``primaries`` cluster nodes, join them (``redis-cli --cluster create``, no
    replicas), yield the cluster once every node reports ``cluster_state:ok``; stop all."""
    binary = find_server_binary()
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if cli is None:
        raise ServerUnavailable(
            "a Redis Cluster needs redis-cli on PATH (apt-get install redis-tools)"
        )
    node_args = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(
                launch_server(binary, port=_cluster_port(), timeout=timeout, extra_args=node_args)
            )
            for _ in range(primaries)
        ]
        addresses = [f"{LOOPBACK}:{node.port}" for node in nodes]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise ServerUnavailable(
                "redis-cli --cluster create failed: " + " ".join(created.stdout.split()[-12:])
            )
        _wait_until_cluster_ok(nodes, timeout)
        yield LaunchedCluster(nodes)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and below 65536 too."""
    for _ in range(100):
        port = free_port()
        if port + 10_000 < 65_536 and _port_is_free(port + 10_000):
            return port
    raise ServerUnavailable("no free pair of ports for a cluster node (port, port + 10000)")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _wait_until_cluster_ok(nodes: Sequence[LaunchedServer], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for node in nodes:
            client = Redis(host=LOOPBACK, port=node.port, socket_timeout=0.5)
            try:
                info = dict(client.cluster("INFO"))  # parsed: {"cluster_state": "ok", ...}
            except (RedisError, OSError):
                info = {}
            finally:
                client.close()
            known = str(info.get("cluster_known_nodes", ""))
            states.append(info.get("cluster_state") == "ok" and known == str(len(nodes)))
        if all(states):
            return
        time.sleep(_POLL_SECONDS)
    raise ServerUnavailable(f"the demo's Redis Cluster was not ok within {timeout:g} s")
