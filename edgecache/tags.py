"""Surrogate keys (cache tags) for org objects at the edge.

Every tag of an org object starts with the org (or names a property, which belongs to
one org), so a purge never reaches another org's objects and `org-{id}` removes all of
one org's. The auth preflight answers also carry their user's tag (`user-{id}`).
"""

import uuid

SECTIONS = ("expenses", "revenues", "summary", "properties", "access")


def org_tag(org_id: uuid.UUID | str) -> str:
    return f"org-{org_id}"


def org_section_tag(org_id: uuid.UUID | str, section: str) -> str:
    if section not in SECTIONS:
        raise ValueError(f"unknown cache section {section!r}")
    return f"org-{org_id}-{section}"


def user_access_tag(user_id: uuid.UUID | str) -> str:
    """Tags the edge's auth preflight answers of one user: purged when any of the
    user's access is revoked, so "allowed" is dropped at once, not waited out."""
    return f"user-{user_id}"


def property_tag(property_id: uuid.UUID | str) -> str:
    return f"property-{property_id}"


def finance_write_tags(*, org_id: uuid.UUID | str, kind: str) -> list[str]:
    """What a change to one expense or revenue makes stale: its lists and details, and
    the org's summary."""
    return [org_section_tag(org_id, f"{kind}s"), org_section_tag(org_id, "summary")]
