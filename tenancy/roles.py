"""Membership roles and what each may do."""

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    MANAGER = "manager", "Manager"
    VIEWER = "viewer", "Viewer"


_RANK = {Role.VIEWER: 0, Role.MANAGER: 1, Role.OWNER: 2}


def role_allows(role: str, required: Role) -> bool:
    """Roles are ordered: an owner may do all a manager may, a manager all a viewer may."""
    return _RANK[Role(role)] >= _RANK[required]
