"""API tokens: log in (one token per device), log out one device, log out everywhere."""

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import authenticated_user
from accounts.login_throttle import (
    LoginAttempt,
    client_address,
    login_blocked_for,
    login_failure_record,
    login_success_record,
)
from accounts.tokens import token_issue, token_revoke, tokens_revoke_all
from core.serializers import StrictSerializer

_DETAIL = inline_serializer("AuthErrorDetail", {"detail": serializers.CharField()})


_REVOKE_SCHEMA = extend_schema(
    request=None,
    responses={
        204: None,
        401: OpenApiResponse(_DETAIL, description="Missing, bad, revoked or expired token."),
    },
)


class LoginInput(StrictSerializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`; shown only once.")
    expires_at = serializers.DateTimeField()


class TokenApi(APIView):
    """POST: log in; DELETE: revoke the token this request is made with."""

    def _is_login(self) -> bool:
        request = getattr(self, "request", None)  # None while the schema is generated
        return request is not None and request.method == "POST"

    def get_authenticators(self) -> list:
        if self._is_login():
            return []  # a login needs no token (and ignores one)
        return super().get_authenticators()

    def get_permissions(self) -> list:
        if self._is_login():
            return [AllowAny()]
        return [IsAuthenticated()]

    def get_throttles(self) -> list:
        if self._is_login():
            return []  # logins have their own throttle (per username and address)
        return super().get_throttles()

    @extend_schema(
        request=LoginInput,
        responses={
            200: TokenOutput,
            400: OpenApiResponse(description="Missing fields, or bad credentials."),
            429: OpenApiResponse(
                _DETAIL,
                description="Too many failed logins for this username or address; see Retry-After.",
            ),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = LoginInput(data=request.data)
        data.is_valid(raise_exception=True)
        attempt = LoginAttempt(username=data.validated_data["username"], address=client_address(request))
        wait = login_blocked_for(attempt)
        if wait is not None:
            raise Throttled(wait=wait, detail="Too many failed logins; try again later.")
        # Django's ModelBackend hashes the password for unknown usernames too, so an
        # unknown name costs (and takes) as long as a known one.
        user = authenticate(
            request._request, username=attempt.username, password=data.validated_data["password"]
        )
        if user is None:
            login_failure_record(attempt)
            raise serializers.ValidationError(
                {"non_field_errors": ["Unable to log in with provided credentials."]}
            )
        login_success_record(attempt)
        row, token = token_issue(user=user)
        return Response(TokenOutput({"token": token, "expires_at": row.expiry}).data)

    @_REVOKE_SCHEMA
    def delete(self, request: Request) -> Response:
        token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokensApi(APIView):
    """DELETE /v1/auth/tokens: every token of the caller stops working."""

    @_REVOKE_SCHEMA
    def delete(self, request: Request) -> Response:
        tokens_revoke_all(user=authenticated_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
