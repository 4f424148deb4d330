from typing import Any

from django.contrib.auth.models import AbstractUser
from django.db import models

from core.ids import uuid7


class User(AbstractUser):
    """The project's user, custom from the first migration (as Django advises).

    Users are global (not tenant rows): one person may belong to many organizations.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    _password: str | None  # AbstractBaseUser's pending raw password (set_password); not in the stubs

    class Meta:
        db_table = "accounts_user"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A password change (API, admin, `changepassword`) or a deactivation revokes
        every API token of the user: whoever held one must log in again."""
        password_changed = self._password is not None  # set by set_password(), cleared by save()
        existing = not self._state.adding
        super().save(*args, **kwargs)
        if existing and (password_changed or not self.is_active):
            from accounts.tokens import tokens_revoke_all  # tokens import this module

            tokens_revoke_all(user=self)
