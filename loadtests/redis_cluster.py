"""A throwaway Redis Cluster for tests and benchmarks: three masters, one replica each.

Six :class:`loadtests.services.ThrowawayRedis` processes in cluster mode (``cluster-enabled
yes``, AOF on with ``appendfsync always`` as production runs it, a short
``cluster-node-timeout`` so that a failover takes about a second), joined with the cluster
commands themselves (``CLUSTER ADDSLOTSRANGE``, ``MEET``, ``REPLICATE``): no ``redis-cli``
needed. :meth:`ThrowawayRedisCluster.start` returns once every slot is served, every node
agrees the cluster is ``ok`` and every replica's link to its master is up.

:meth:`kill_master` SIGKILLs the master serving a slot, as a crash does; its replica is
promoted by the cluster itself (``cluster-replica-validity-factor 0``: a replica may always
take over), and :meth:`wait_healthy` waits for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import redis

from loadtests.services import ThrowawayRedis, redis_binary

SLOTS: Final = 16384
NODE_TIMEOUT_MS: Final = 1000
SETTLE_TIMEOUT: Final = 30.0
POLL: Final = 0.05
CLUSTER_ARGS: Final = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    "--cluster-replica-validity-factor", "0",
    "--cluster-require-full-coverage", "yes",
)  # fmt: skip


def _wait(what: str, check: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> None:
    """Poll ``check`` under a deadline (cluster gossip has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis cluster: {what} not reached in {timeout:.0f}s")
        time.sleep(POLL)


def _client(server: ThrowawayRedis) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)


@dataclass
class ThrowawayRedisCluster:
    """``masters`` masters with ``replicas`` replicas each; ``make`` launches one server
    (the tests pass theirs, which records an owner for reaping)."""

    masters: int = 3
    replicas: int = 1
    make: Callable[[], ThrowawayRedis] | None = None
    servers: list[ThrowawayRedis] = field(default_factory=list)

    def _launch(self) -> ThrowawayRedis:
        if self.make is not None:
            return self.make()
        return ThrowawayRedis.launch(binary=redis_binary(), extra=CLUSTER_ARGS)

    def start(self) -> ThrowawayRedisCluster:
        try:
            self.servers = [self._launch() for _ in range(self.masters * (1 + self.replicas))]
            self._join()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        """A URL naming one node (any node will do for a cluster client)."""
        return self.servers[0].url

    @property
    def live(self) -> list[ThrowawayRedis]:
        return [server for server in self.servers if server.pid is not None]

    def _join(self) -> None:
        masters = self.servers[: self.masters]
        per = SLOTS // self.masters
        for index, server in enumerate(masters):
            last = SLOTS - 1 if index == self.masters - 1 else (index + 1) * per - 1
            with _client(server) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * per, last)
        first = self.servers[0]
        for server in self.servers[1:]:
            with _client(server) as client:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port, first.bus_port)
        _wait("every node knows every other", self._all_known)
        ids = [self._node_id(server) for server in masters]
        for index, server in enumerate(self.servers[self.masters :]):
            with _client(server) as client:
                client.execute_command("CLUSTER", "REPLICATE", ids[index % self.masters])
        self.wait_healthy()

    @staticmethod
    def _node_id(server: ThrowawayRedis) -> str:
        with _client(server) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def _all_known(self) -> bool:
        for server in self.servers:
            with _client(server) as client:
                nodes = client.execute_command("CLUSTER", "NODES").decode().splitlines()
            if len(nodes) != len(self.servers):
                return False
        return True

    def _healthy(self) -> bool:
        live = self.live
        for server in live:
            with _client(server) as client:
                info = client.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info:
                    return False
                replication = client.info("replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        masters = sum(1 for server in live if self.role(server) == "master")
        return masters == self.masters

    def wait_healthy(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until every live node says the cluster is ok, every slot has a master and
        every live replica is linked to its master."""
        _wait("a healthy cluster", self._healthy, timeout)

    @staticmethod
    def role(server: ThrowawayRedis) -> str:
        with _client(server) as client:
            return str(client.info("replication")["role"])

    def master_of(self, key: str) -> ThrowawayRedis:
        """The live master serving ``key``'s slot."""
        with _client(self.live[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            shards = client.execute_command("CLUSTER", "SLOTS")
        for start, end, master, *_ in shards:
            if start <= slot <= end:
                port = int(master[1])
                return next(server for server in self.servers if server.port == port)
        raise RuntimeError(f"no master serves slot {slot}")

    def kill_master(self, key: str) -> ThrowawayRedis:
        """SIGKILL the master serving ``key`` (its replica takes over); the killed server."""
        master = self.master_of(key)
        master.kill()
        return master

    def move_slot(self, key: str, *, pause: float = 0.0) -> ThrowawayRedis:
        """Reshard: migrate the slot of ``key`` to another master, key by key (``pause``
        seconds between two keys, so clients meet ``ASK`` and ``MOVED`` meanwhile), as
        ``redis-cli --cluster reshard`` does. Returns the new master."""
        source = self.master_of(key)
        target = next(s for s in self.live if s is not source and self.role(s) == "master")
        with _client(source) as src, _client(target) as dst:
            slot = int(src.execute_command("CLUSTER", "KEYSLOT", key))
            source_id, target_id = self._node_id(source), self._node_id(target)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                time.sleep(pause)
            for server in self.live:
                if self.role(server) == "master":
                    with _client(server) as client:
                        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_healthy()
        return target

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []
