from django.contrib.auth.models import AbstractUser
from django.db import models

from core.ids import uuid7


class User(AbstractUser):
    """The project's user, custom from the first migration (as Django advises).

    Users are global (not tenant rows): one person may belong to many organizations.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)

    class Meta:
        db_table = "accounts_user"
