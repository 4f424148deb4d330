from django.urls import path

from edgecache.authz import EdgeAuthzApi

urlpatterns = [path("authz/<uuid:org_id>", EdgeAuthzApi.as_view(), name="edge-authz")]
