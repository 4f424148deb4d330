"""`Authorization: Token <token>` for DRF, against hashed, expiring knox tokens.

The lookup always reads the primary (never a replica that may not have replayed a
revocation yet): a revoked or expired token is refused from the next request on.
"""

from typing import Any

from knox.auth import TokenAuthentication
from knox.models import AuthToken
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.request import Request

from accounts.models import User
from accounts.selectors import token_find
from replicas.context import primary_reads


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, token: Any) -> tuple[User, AuthToken]:
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid token.") from None
        with primary_reads():
            found = token_find(token=text)
        if found is None:
            raise AuthenticationFailed("Invalid token.")
        return found.user, found


def authenticated_user(request: Request) -> User:
    """The request's user, past the view's IsAuthenticated check (typed as a User, not an
    AnonymousUser). Reaching here anonymous is a view without that check: a 401."""
    user = request.user
    if not isinstance(user, User):
        raise NotAuthenticated()
    return user
