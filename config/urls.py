from django.contrib import admin
from django.urls import include, path

from accounts.api import TokenApi, TokensApi
from core.schema_view import CachedSchemaView

handler400 = "core.errors.bad_request"
handler403 = "core.errors.permission_denied"
handler404 = "core.errors.not_found"
handler500 = "core.errors.server_error"

urlpatterns = [
    path("v1/auth/token", TokenApi.as_view(), name="auth-token"),
    path("v1/auth/tokens", TokensApi.as_view(), name="auth-tokens"),
    path("v1/", include("tenancy.api.urls")),
    path("v1/", include("push.urls")),
    path("v1/orgs/<uuid:org_id>/", include("finance.api.urls")),
    path("v1/orgs/<uuid:org_id>/", include("sync.api.urls")),
    path("v1/system/database/", include("replicas.urls")),
    path("v1/system/", include("monitoring.urls")),
    path("v1/edge/", include("edgecache.urls")),
    path("v2/realtime/", include("realtime.urls")),  # realtime (websockets: config/asgi.py)
    path("v1/schema", CachedSchemaView.as_view(), name="schema"),
    path("admin/", admin.site.urls),
]
