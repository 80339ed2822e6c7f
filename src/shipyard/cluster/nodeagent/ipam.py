"""Pod IPs: one address per pod from the agent's pod network, so pods keep their containerPorts.

Why loopback: Linux answers every address of 127.0.0.0/8 on `lo` without any setup or privilege, so a pod
given 127.1.0.7 can listen on 127.1.0.7:8000 beside another pod on 127.1.0.8:8000, exactly as two pods on two
IPs would. Nothing routes these addresses off the machine, which is what a test cluster wants. One catch: the
API server refuses loopback addresses in EndpointSlices, so Services list no endpoints. Where the agent's user
may add a route, any range made local to the machine works the same and avoids that: `ip route add local
198.18.0.0/16 dev lo` and `--pod-network 198.18.0.0/16` (what the test suite does when it can).

Addresses are handed out round-robin from where the last one was taken, not lowest-first, so a pod replacing
a deleted one does not inherit an address a stale client may still be talking to. One agent owns its pod
network: two agents on one machine need disjoint --pod-network ranges.
"""

from __future__ import annotations

import ipaddress


class PodNetwork:
    def __init__(self, cidr: str, reserved: set[str] | None = None):
        self.network = ipaddress.ip_network(cidr)
        if self.network.num_addresses < 4:
            raise ValueError(f"pod network {cidr} is too small")
        self._reserved = {ipaddress.ip_address(a) for a in (reserved or set())}
        self._by_uid: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self._cursor = self.network.network_address + 1

    def allocate(self, uid: str) -> str:
        """The pod's address: the one it already has, or the next free one."""
        if uid in self._by_uid:
            return str(self._by_uid[uid])
        taken = set(self._by_uid.values()) | self._reserved
        first, last = self.network.network_address + 1, self.network.broadcast_address - 1
        candidate = self._cursor
        for _ in range(self.network.num_addresses):
            if candidate > last or candidate < first:
                candidate = first
            if candidate not in taken:
                self._by_uid[uid] = candidate
                self._cursor = candidate + 1
                return str(candidate)
            candidate += 1
        raise RuntimeError(f"pod network {self.network} is exhausted")

    def claim(self, uid: str, address: str) -> bool:
        """Record an address a pod already has (an agent restarted); False if it is outside the network or
        another pod holds it."""
        ip = ipaddress.ip_address(address)
        if ip not in self.network or any(v == ip and k != uid for k, v in self._by_uid.items()):
            return False
        self._by_uid[uid] = ip
        return True

    def release(self, uid: str) -> None:
        self._by_uid.pop(uid, None)

    def address(self, uid: str) -> str | None:
        ip = self._by_uid.get(uid)
        return str(ip) if ip is not None else None

    def __len__(self) -> int:
        return len(self._by_uid)
