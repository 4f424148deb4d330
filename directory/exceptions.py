"""What a write of an org being moved gets: 503 with Retry-After (CONTRACT §13)."""

import math

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException

# The epoch of an org's counter row on the cluster it left: its writes there are refused.
MOVED_EPOCH = "moved"


class OrgMoving(APIException):
    """The org's final switch to another cluster is under way, or just happened and
    this process still routed the write to the old cluster: retry shortly."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The organization is being moved to another database; retry shortly."
    default_code = "org_moving"

    def __init__(self) -> None:
        super().__init__()
        self.wait = max(1, math.ceil(settings.ORG_MOVE_FENCE_SECONDS / 5))  # DRF sends it as Retry-After
