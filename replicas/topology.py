"""Database clusters (a primary with its replicas) and the org-id ranges they own.

`settings.DATABASE_CLUSTERS` maps a cluster name to its aliases and org ranges:

    {"main": {"primary": "default", "replicas": ["replica1", "replica2"],
              "org_ranges": [["00000000-0000-0000-0000-000000000000",
                              "ffffffff-ffff-ffff-ffff-ffffffffffff"]]}}

Org ids are UUIDv7, compared as 128-bit integers; ranges are inclusive and must not
overlap. The lookup is a bisect over the sorted range starts: O(log n) in the number
of ranges, so thousands of ranges (clusters split by id range over the years) cost
microseconds. An org outside every range is an error (`OrgNotRouted`), never a silent
default: a gap in the table is a configuration bug that must be loud.
"""

import bisect
import itertools
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings

HOME_CLUSTER = "main"


class OrgNotRouted(LookupError):
    """The org id lies outside every configured range."""


@dataclass(frozen=True)
class Cluster:
    name: str
    primary: str
    replicas: tuple[str, ...]


@dataclass(frozen=True)
class Topology:
    clusters: dict[str, Cluster]
    starts: tuple[int, ...]
    ranges: tuple[tuple[int, int, str], ...]  # (start, end inclusive, cluster), sorted

    @property
    def home(self) -> Cluster:
        return self.clusters[HOME_CLUSTER]

    def cluster_of_alias(self, alias: str) -> Cluster | None:
        for cluster in self.clusters.values():
            if alias == cluster.primary or alias in cluster.replicas:
                return cluster
        return None

    def cluster_for_org(self, org_id: uuid.UUID | str) -> Cluster:
        value = (org_id if isinstance(org_id, uuid.UUID) else uuid.UUID(str(org_id))).int
        index = bisect.bisect_right(self.starts, value) - 1
        if index >= 0:
            start, end, name = self.ranges[index]
            if start <= value <= end:
                return self.clusters[name]
        raise OrgNotRouted(f"org {org_id} is outside every configured cluster range")

    @property
    def primaries(self) -> frozenset[str]:
        return frozenset(c.primary for c in self.clusters.values())

    @property
    def replica_aliases(self) -> tuple[str, ...]:
        return tuple(alias for c in self.clusters.values() for alias in c.replicas)


def build_topology(config: dict[str, dict[str, Any]]) -> Topology:
    if HOME_CLUSTER not in config:
        raise ValueError(f"DATABASE_CLUSTERS needs a '{HOME_CLUSTER}' cluster")
    clusters: dict[str, Cluster] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, spec in config.items():
        clusters[name] = Cluster(name, spec["primary"], tuple(spec.get("replicas", ())))
        for start, end in spec.get("org_ranges", ()):
            low, high = uuid.UUID(str(start)).int, uuid.UUID(str(end)).int
            if low > high:
                raise ValueError(f"cluster {name}: range start {start} is after its end {end}")
            ranges.append((low, high, name))
    ranges.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(ranges):
        if start <= end:
            raise ValueError(f"org ranges of clusters {first} and {second} overlap")
    return Topology(clusters, tuple(r[0] for r in ranges), tuple(ranges))


@cache
def topology() -> Topology:
    return build_topology(settings.DATABASE_CLUSTERS)


def reset_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DATABASE_CLUSTERS", "DATABASES"):
        topology.cache_clear()
