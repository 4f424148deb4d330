"""Create (or refresh) a demo org with an owner, and a staff superuser; print logins.

Run by `make run`. Passwords are generated on each run and printed once; existing
demo users get the new password, so the printed credentials always work. With more
than one database cluster (`CLUSTER_COUNT=2 make run`), the owner also gets a demo org
on each other cluster, so both are there to try (docs/clusters.md).
"""

import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User
from accounts.tokens import token_issue
from replicas.context import use_cluster
from replicas.topology import Cluster, topology
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role
from tenancy.services import organization_create, property_create

DEMO_ORG = "Demo Hotel Group"


class Command(BaseCommand):
    help = "Create a demo org, its owner and a staff superuser, and print their credentials."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--owner", default="demo-owner")
        parser.add_argument("--admin", default="admin")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    @transaction.atomic
    def handle(self, *args: Any, owner: str, admin: str, base_url: str, **options: Any) -> None:
        owner_password, admin_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        owner_user = self._user(owner, owner_password, staff=False)
        self._user(admin, admin_password, staff=True)

        topo = topology()
        others = [c for name, c in topo.clusters.items() if name != topo.default.name]
        demos = [self._demo_org(owner_user, topo.default, DEMO_ORG)]
        demos += [self._demo_org(owner_user, cluster, f"{DEMO_ORG} ({cluster.name})") for cluster in others]
        _, token = token_issue(user=owner_user)  # shown once: only its digest is stored

        lines = [
            "",
            "Demo credentials (new passwords on every run):",
            f"  API owner   {owner} / {owner_password}   token: {token}",
            f"  Admin       {admin} / {admin_password}   {base_url}/admin/",
        ]
        for cluster, org, prop in demos:
            lines += [
                f"  Org         {org.id}  ({org.name}, database cluster {cluster.name})",
                f"  Property    {prop.id}  ({prop.name}, {prop.currency})",
            ]
        org = demos[0][1]
        lines += [
            "",
            "Try:",
            f"  curl -s -H 'Authorization: Token {token}' {base_url}/v1/orgs/{org.id}/expenses",
            "",
        ]
        self.stdout.write("\n".join(lines))

    @staticmethod
    def _demo_org(owner: User, cluster: Cluster, name: str) -> tuple[Cluster, Organization, Property]:
        """The owner's demo org on `cluster` (made there on the first run)."""
        with use_cluster(cluster):
            membership = (
                Membership.objects.select_related("org")
                .filter(user=owner, role=Role.OWNER)
                .order_by("id")
                .first()
            )
        if membership is None:
            membership = organization_create(name=name, owner=owner, cluster=cluster)
        org = membership.org
        with use_cluster(cluster, org.id):
            prop = Property.objects.filter(org=org).first() or property_create(
                org=org, name="Seaside Hotel", currency="EUR", timezone="Europe/Lisbon"
            )
        return cluster, org, prop

    @staticmethod
    def _user(username: str, password: str, *, staff: bool) -> User:
        user, _ = User.objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = user.is_superuser = staff
        user.is_active = True
        user.save()
        return user
