"""Reads for accounts."""

import datetime
from hmac import compare_digest

from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS

MAX_TOKEN_CHARS = 256


def token_is_plausible(token: str) -> bool:
    """Whether a presented token can be one of ours at all (checked before any query)."""
    return bool(token) and len(token) <= MAX_TOKEN_CHARS and token.isascii()


def token_find(*, token: str) -> AuthToken | None:
    """The live (unexpired, active user) token row for a presented token, or None.

    One indexed query by the token's first characters, then a constant-time digest
    comparison. Expired rows are not deleted here (no writes on the read path):
    `manage.py auth_tokens_purge_expired` clears them. Org routes read the token with
    the caller's membership instead (`tenancy.selectors.token_with_membership`).
    """
    if not token_is_plausible(token):
        return None
    digest = hash_token(token)
    now = datetime.datetime.now(tz=datetime.UTC)
    candidates = AuthToken.objects.select_related("user").filter(
        token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH], expiry__gt=now
    )
    for candidate in candidates:
        if compare_digest(digest, candidate.digest) and candidate.user.is_active:
            return candidate
    return None
