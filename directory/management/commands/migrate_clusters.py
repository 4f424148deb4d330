"""`migrate` on every cluster's primary (the directory cluster's first): each cluster
has every app's tables, so any of them can take any org (docs/clusters.md)."""

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from replicas.topology import topology


class Command(BaseCommand):
    help = "Apply migrations on the primary of every database cluster."

    def handle(self, *args: Any, **options: Any) -> None:
        topo = topology()
        names = [topo.directory_name, *(name for name in topo.clusters if name != topo.directory_name)]
        for name in names:
            alias = topo.clusters[name].primary
            self.stdout.write(f"cluster {name} ({alias}):")
            call_command("migrate", database=alias, interactive=False, verbosity=options["verbosity"])
