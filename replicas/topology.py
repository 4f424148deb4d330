"""Database clusters (a primary with its replicas), by name.

`settings.DATABASE_CLUSTERS` maps a cluster name to its aliases:

    {"main": {"primary": "default", "replicas": ["replica1", "replica2"]},
     "c2": {"primary": "c2_primary", "replicas": ["c2_replica1"]}}

Which cluster holds an org is not configuration but data: the org directory
(directory/, docs/clusters.md). Two clusters are named by settings:
`DIRECTORY_CLUSTER` holds the global tables (users, tokens, the directory) and
`DEFAULT_CLUSTER` receives new orgs; both default to "main".
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings

HOME_CLUSTER = "main"


class OrgNotRouted(LookupError):
    """The org cannot be placed: not in the directory, or its cluster is unknown here."""


class ClusterNotConfigured(OrgNotRouted):
    """The directory names a cluster this process has no aliases for (a deploy bug)."""


@dataclass(frozen=True)
class Cluster:
    name: str
    primary: str
    replicas: tuple[str, ...]


@dataclass(frozen=True)
class Topology:
    clusters: dict[str, Cluster]
    directory_name: str
    default_name: str

    @property
    def home(self) -> Cluster:
        """The directory cluster: global tables, and queries bound to no org."""
        return self.clusters[self.directory_name]

    @property
    def default(self) -> Cluster:
        """Where new orgs are created."""
        return self.clusters[self.default_name]

    def named(self, name: str) -> Cluster:
        try:
            return self.clusters[name]
        except KeyError:
            raise ClusterNotConfigured(
                f"database cluster {name!r} is not configured in this process"
            ) from None

    def cluster_of_alias(self, alias: str) -> Cluster | None:
        for cluster in self.clusters.values():
            if alias == cluster.primary or alias in cluster.replicas:
                return cluster
        return None

    @property
    def primaries(self) -> frozenset[str]:
        return frozenset(c.primary for c in self.clusters.values())

    @property
    def replica_aliases(self) -> tuple[str, ...]:
        return tuple(alias for c in self.clusters.values() for alias in c.replicas)


def build_topology(
    config: dict[str, dict[str, Any]], *, directory: str = HOME_CLUSTER, default: str = HOME_CLUSTER
) -> Topology:
    clusters = {
        name: Cluster(name, spec["primary"], tuple(spec.get("replicas", ()))) for name, spec in config.items()
    }
    for role, name in (("DIRECTORY_CLUSTER", directory), ("DEFAULT_CLUSTER", default)):
        if name not in clusters:
            raise ValueError(
                f"{role} {name!r} is not one of DATABASE_CLUSTERS ({', '.join(sorted(clusters))})"
            )
    aliases = [alias for c in clusters.values() for alias in (c.primary, *c.replicas)]
    if len(aliases) != len(set(aliases)):
        raise ValueError("a database alias belongs to two clusters")
    return Topology(clusters, directory, default)


@cache
def topology() -> Topology:
    return build_topology(
        settings.DATABASE_CLUSTERS,
        directory=getattr(settings, "DIRECTORY_CLUSTER", HOME_CLUSTER),
        default=getattr(settings, "DEFAULT_CLUSTER", HOME_CLUSTER),
    )


def reset_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DATABASE_CLUSTERS", "DATABASES", "DIRECTORY_CLUSTER", "DEFAULT_CLUSTER"):
        topology.cache_clear()
