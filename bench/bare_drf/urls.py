from django.urls import path

from bench.bare_drf.views import EntryDetail, EntryListCreate

urlpatterns = [
    path("bare/orgs/<uuid:org_id>/expenses", EntryListCreate.as_view()),
    path("bare/orgs/<uuid:org_id>/expenses/<uuid:pk>", EntryDetail.as_view()),
]
