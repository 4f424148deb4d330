"""Create (or refresh) a demo org with an owner, and a staff superuser; print logins.

Run by `make run`. Passwords are generated on each run and printed once; existing
demo users get the new password, so the printed credentials always work.
"""

import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User
from accounts.tokens import token_issue
from tenancy.models import Membership, Property
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

        membership = Membership.objects.select_related("org").filter(user=owner_user, role=Role.OWNER).first()
        if membership is None:
            membership = organization_create(name=DEMO_ORG, owner=owner_user)
        org = membership.org
        prop = Property.objects.filter(org=org).first() or property_create(
            org=org, name="Seaside Hotel", currency="EUR", timezone="Europe/Lisbon"
        )
        _, token = token_issue(user=owner_user)  # shown once: only its digest is stored

        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Demo credentials (new passwords on every run):",
                    f"  API owner   {owner} / {owner_password}   token: {token}",
                    f"  Admin       {admin} / {admin_password}   {base_url}/admin/",
                    f"  Org         {org.id}  ({org.name})",
                    f"  Property    {prop.id}  ({prop.name}, {prop.currency})",
                    "",
                    "Try:",
                    f"  curl -s -H 'Authorization: Token {token}' {base_url}/v1/orgs/{org.id}/expenses",
                    "",
                ]
            )
        )

    @staticmethod
    def _user(username: str, password: str, *, staff: bool) -> User:
        user, _ = User.objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = user.is_superuser = staff
        user.is_active = True
        user.save()
        return user
