from django.urls import path

from sync.api.views import SyncPullApi, SyncPushApi

urlpatterns = [
    path("sync/pull", SyncPullApi.as_view(), name="sync-pull"),
    path("sync/push", SyncPushApi.as_view(), name="sync-push"),
]
