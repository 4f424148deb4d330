"""API tokens for test users: one live token per user, reused while it stays valid
(the way DRF's single token per user used to behave), a new one once it was revoked."""

from typing import Any

from accounts.selectors import token_find
from accounts.tokens import token_issue

_issued: dict[Any, str] = {}


def token_for(user: Any) -> str:
    token = _issued.get(user.pk)
    if token is None or token_find(token=token) is None:
        _, token = token_issue(user=user)
        _issued[user.pk] = token
    return token
