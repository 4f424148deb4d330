"""API tokens: one per login (per device), stored only as a SHA-512 digest
(django-rest-knox), each expiring AUTH_TOKEN_TTL_SECONDS after issue.

A copy of the database, a replica or a backup holds digests, never a usable token.
Every revocation is recorded as an access change in the change log, so the edge and
open sockets drop the token at once (and the outbox worker redoes it if the process
died right after the commit).
"""

import datetime

from django.conf import settings
from django.db import transaction
from knox.models import AuthToken

from accounts.access_cache import access_cache_drop
from accounts.access_topics import TOPIC_TOKENS_REVOKED
from accounts.models import User
from changelog.services import access_change_record
from push.services import devices_deactivate_of_user


def token_issue(*, user: User) -> tuple[AuthToken, str]:
    """A new token for `user`; returns the row and the token, which is shown only now."""
    ttl = datetime.timedelta(seconds=settings.AUTH_TOKEN_TTL_SECONDS)
    return AuthToken.objects.create(user=user, expiry=ttl)


def token_revoke(*, token: AuthToken) -> None:
    with transaction.atomic():
        deleted, _ = AuthToken.objects.filter(digest=token.digest).delete()
        if deleted:
            access_change_record(
                org_id=None,
                user_id=token.user_id,
                topic=TOPIC_TOKENS_REVOKED,
                data={"digests": [token.digest]},
            )
            access_cache_drop()


def tokens_revoke_all(*, user: User) -> int:
    """Revoke every token of `user` (logout everywhere, password change); returns how many.

    The user's push devices are deactivated in the same transaction: a phone that was
    logged out (or stolen) must not keep showing the org's large expenses. The app
    registers its device again after the next login (docs/push.md)."""
    with transaction.atomic():
        devices_deactivate_of_user(user_id=user.pk, error="every token of the user was revoked")
        deleted, _ = AuthToken.objects.filter(user_id=user.pk).delete()
        if deleted:
            access_change_record(org_id=None, user_id=user.pk, topic=TOPIC_TOKENS_REVOKED, data={"all": True})
            access_cache_drop()
    return deleted


def tokens_purge_expired(*, batch_size: int = 5000) -> int:
    """Delete expired tokens in short batches (they already get 401; this frees space)."""
    total = 0
    while True:
        now = datetime.datetime.now(tz=datetime.UTC)
        batch = list(AuthToken.objects.filter(expiry__lt=now).values_list("digest", flat=True)[:batch_size])
        if not batch:
            return total
        total += AuthToken.objects.filter(digest__in=batch).delete()[0]
