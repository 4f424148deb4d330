"""Thin views for the push routes: devices (per user) and preferences (per member)."""

import uuid

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import authenticated_user
from core.pagination import paginate_desc
from push.credentials import CredentialsMissing, vapid_public_key
from push.selectors import device_get, devices_of_user, preference_get
from push.serializers import (
    DeviceInput,
    DeviceOutput,
    DevicePageOutput,
    PreferenceInput,
    PreferenceOutput,
    VapidPublicKeyOutput,
)
from push.services import device_delete, device_register, preference_set
from tenancy.access import OrgScopedApi
from tenancy.roles import Role

NOT_FOUND = OpenApiResponse(description="Not found (or not yours).")
BAD_REQUEST = OpenApiResponse(description="Invalid input: field errors.")
UNAUTHORIZED = OpenApiResponse(description="Missing, bad or expired token.")


class VapidPublicKeyApi(APIView):
    @extend_schema(
        responses={
            200: VapidPublicKeyOutput,
            401: UNAUTHORIZED,
            404: OpenApiResponse(description="Web Push is not configured."),
        }
    )
    def get(self, request: Request) -> Response:
        try:
            key = vapid_public_key()
        except CredentialsMissing:
            raise NotFound("Web Push is not configured on this server.") from None
        return Response({"public_key": key})


class DeviceListCreateApi(APIView):
    @extend_schema(responses={200: DevicePageOutput, 400: BAD_REQUEST, 401: UNAUTHORIZED})
    def get(self, request: Request) -> Response:
        page = paginate_desc(devices_of_user(user=authenticated_user(request)), request, ("id",))
        return Response(page.serialized(DeviceOutput))

    @extend_schema(
        request=DeviceInput,
        responses={
            201: DeviceOutput,
            200: OpenApiResponse(DeviceOutput, description="Already registered: the same device."),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
        },
    )
    def post(self, request: Request) -> Response:
        data = DeviceInput(data=request.data)
        data.is_valid(raise_exception=True)
        device, created = device_register(user=authenticated_user(request), **data.validated_data)
        return Response(
            DeviceOutput(device).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class DeviceDetailApi(APIView):
    @extend_schema(responses={204: None, 401: UNAUTHORIZED, 404: NOT_FOUND})
    def delete(self, request: Request, device_id: uuid.UUID) -> Response:
        device = device_get(user=authenticated_user(request), device_id=device_id)
        if device is None:
            raise NotFound()
        device_delete(device=device)
        return Response(status=status.HTTP_204_NO_CONTENT)


class NotificationPreferenceApi(OrgScopedApi):
    """Every member sets their own preferences: viewers too."""

    write_role = Role.VIEWER

    @extend_schema(responses={200: PreferenceOutput, 401: UNAUTHORIZED, 404: NOT_FOUND})
    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        return Response(
            PreferenceOutput(preference_get(org_id=self.org.id, user=authenticated_user(request))).data
        )

    @extend_schema(
        request=PreferenceInput,
        responses={200: PreferenceOutput, 400: BAD_REQUEST, 401: UNAUTHORIZED, 404: NOT_FOUND},
    )
    def put(self, request: Request, org_id: uuid.UUID) -> Response:
        data = PreferenceInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        preference = preference_set(
            org=self.org,
            user=authenticated_user(request),
            large_expense_enabled=values["large_expense"]["enabled"],
            thresholds=values["large_expense"]["thresholds"],
            sync=values["sync"],
        )
        return Response(PreferenceOutput(preference).data)
