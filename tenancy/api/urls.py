from django.urls import path

from tenancy.api import views

urlpatterns = [
    path("orgs", views.OrganizationListCreateApi.as_view(), name="org-list"),
    path("orgs/<uuid:org_id>", views.OrganizationDetailApi.as_view(), name="org-detail"),
    path("orgs/<uuid:org_id>/members", views.MemberListCreateApi.as_view(), name="member-list"),
    path(
        "orgs/<uuid:org_id>/members/<uuid:user_id>",
        views.MemberDetailApi.as_view(),
        name="member-detail",
    ),
    path("orgs/<uuid:org_id>/properties", views.PropertyListCreateApi.as_view(), name="property-list"),
    path(
        "orgs/<uuid:org_id>/properties/<uuid:property_id>",
        views.PropertyDetailApi.as_view(),
        name="property-detail",
    ),
]
