"""Reads for accounts."""

import datetime
from collections.abc import Iterable
from hmac import compare_digest

from django.db.models import QuerySet
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS

MAX_TOKEN_CHARS = 256


def token_candidates(*, token: str) -> tuple[QuerySet[AuthToken], str] | None:
    """The unexpired rows that may hold a presented token (one indexed query by its
    first characters, with the user), and the token's digest; None for a token that
    cannot be one of ours. Callers may add to the query (tenancy's access check joins
    the membership) and then pick with `token_pick`."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    now = datetime.datetime.now(tz=datetime.UTC)
    candidates = AuthToken.objects.select_related("user").filter(
        token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH], expiry__gt=now
    )
    return candidates, hash_token(token)


def token_pick(candidates: Iterable[AuthToken], digest: str) -> AuthToken | None:
    """The candidate whose digest matches (constant-time comparison) and whose user is active."""
    for candidate in candidates:
        if compare_digest(digest, candidate.digest) and candidate.user.is_active:
            return candidate
    return None


def token_find(*, token: str) -> AuthToken | None:
    """The live (unexpired, active user) token row for a presented token, or None.

    Expired rows are not deleted here (no writes on the read path):
    `manage.py auth_tokens_purge_expired` clears them.
    """
    found = token_candidates(token=token)
    return token_pick(*found) if found is not None else None
