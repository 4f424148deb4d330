"""Django admin pages of tenant data, each on the database cluster of its org.

The API binds a request to its org's cluster from the URL (tenancy/access.py); admin
URLs carry an object id or list filters instead, so `OrgClusterAdmin` finds the cluster
before the view runs any query, and binds it for the rest of the request (the router
then sends every tenant query there; users, tokens and the admin log stay on the
directory cluster):

- change, delete and history pages: the cluster of the object's org. An object is
  looked up by primary key on each cluster's primary, and the copy kept is the one on
  the cluster the directory places its org on (a move leaves the source's copy until
  its clean step, and `--keep-source` keeps it; ids are UUIDv7s, unique across
  clusters);
- add pages: the cluster of the org named in the form (`org`); a new org is made on
  DEFAULT_CLUSTER;
- lists: the `cluster` filter (shown when there is more than one cluster), else the
  cluster of the `org_id` filter's org or of an org id typed in the search box, else the
  directory cluster. A list shows one cluster at a time.

Writes of one org (a POST of a change, add or delete page) wait out a move's final
switch like the API's (`org_fence_wait`), then run in one transaction on the org's
primary that first takes the org's counter lock (`org_lock_take`), the lock every
writer of the org takes first: a copy left by a move says `moved` there, so a write
routed to it by a stale directory cache is refused whatever it writes (the org row and
memberships take no version). A refused write, or an org on a cluster this server has no
database for, answers 503 with Retry-After and a page saying nothing was saved; the
directory cache entry is dropped, so the retry goes to the org's cluster.
"""

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.template.response import TemplateResponse

from changelog.services import org_lock_take
from directory.exceptions import OrgMoving
from directory.selectors import org_fence_wait, placement_get
from replicas.context import bind_cluster, bind_org_cluster, current_cluster, use_org_cluster
from replicas.topology import Cluster, ClusterNotConfigured, OrgNotRouted, topology

logger = logging.getLogger("core.admin_clusters")

CLUSTER_PARAM = "cluster"
ORG_PARAM = "org_id"  # core.admin_filters.OrgIdFilter
NOT_CONFIGURED_RETRY_SECONDS = 30


class ClusterFilter(admin.SimpleListFilter):
    """Which cluster a list shows. The cluster is bound for the whole request by
    OrgClusterAdmin; this filter only offers the choice and keeps the parameter."""

    title = "database cluster"
    parameter_name = CLUSTER_PARAM

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in topology().clusters]

    def has_output(self) -> bool:
        return len(self.lookup_choices) > 1

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset


@contextmanager
def org_admin_write(org_id: uuid.UUID | str) -> Iterator[None]:
    """One transaction on the org's primary that first takes the org's counter lock:
    refused (OrgMoving) on a copy a move left behind, even for writes that take no
    version (the org row, memberships)."""
    with use_org_cluster(org_id) as cluster, transaction.atomic(using=cluster.primary):
        org_lock_take(org_id=org_id)
        yield


def _hints(request: HttpRequest) -> QueryDict:
    """The request's query parameters, over the list filters a change link preserves."""
    merged = QueryDict(request.GET.get("_changelist_filters", ""), mutable=True)
    for key, values in request.GET.lists():
        merged.setlist(key, values)
    return merged


def _as_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID((value or "").strip())
    except ValueError:
        return None


class OrgClusterAdmin(admin.ModelAdmin):
    """Base of the admin of a model that belongs to one org (see the module docstring)."""

    org_field = "org_id"  # the attribute holding the object's org id

    def get_list_filter(self, request: HttpRequest) -> tuple[Any, ...]:
        return (*super().get_list_filter(request), ClusterFilter)

    # --- finding and binding the cluster -------------------------------------------
    def _placed_cluster(self, org_id: uuid.UUID | str | None) -> Cluster | None:
        if org_id is None:
            return None
        placement = placement_get(org_id=org_id)
        return None if placement is None else topology().named(placement.cluster)

    def _object_org(self, object_id: str) -> tuple[Cluster, str] | None:
        """(cluster, org id) of the object's live copy, None when no cluster has it.
        Ids are global, so the only other copies are ones a move left behind, on a
        cluster the directory no longer places the org on."""
        try:
            pk = self.model._meta.pk.to_python(object_id)
        except ValidationError:
            return None
        if self.org_field == self.model._meta.pk.attname:  # the org itself
            cluster = self._placed_cluster(pk)
            return None if cluster is None else (cluster, str(pk))
        for cluster in topology().clusters.values():
            manager = self.model._default_manager.using(cluster.primary)
            org_id = manager.filter(pk=pk).values_list(self.org_field, flat=True).first()
            if org_id is not None and self._placed_cluster(org_id) == cluster:
                return cluster, str(org_id)
        return None

    def _list_org(self, hints: QueryDict) -> str | None:
        """The org a list is narrowed to: the org filter, else an org id searched for."""
        for value in (hints.get(ORG_PARAM), hints.get("q")):
            org_id = _as_uuid(value)
            if org_id is not None and placement_get(org_id=org_id) is not None:
                return str(org_id)
        return None

    def _target(
        self, request: HttpRequest, object_id: str | None, *, listing: bool
    ) -> tuple[Cluster, str | None]:
        hints = _hints(request)
        named = hints.get(CLUSTER_PARAM)
        if object_id is not None:
            found = self._object_org(object_id)
            if found is not None:
                return found
        elif not listing:  # an add page: the org named in the form
            new_org = _as_uuid(request.POST.get("org") or request.GET.get("org"))
            cluster = self._placed_cluster(new_org)
            if cluster is not None:
                return cluster, str(new_org)
            if self.org_field == self.model._meta.pk.attname:
                return topology().default, None  # a new org
        if named:
            return topology().named(named), None
        if listing:
            org_id = self._list_org(hints)
            if org_id is not None:
                return self._placed_cluster(org_id) or topology().home, org_id
        return topology().home, None

    def _bind(self, request: HttpRequest, object_id: str | None, *, listing: bool = False) -> str | None:
        """Bind the request to its cluster; the org id when the page is one org's."""
        cluster, org_id = self._target(request, object_id, listing=listing)
        if org_id is not None:
            if request.method == "POST":
                org_fence_wait(org_id=org_id)  # a move's final switch: wait, or OrgMoving
            try:
                bind_org_cluster(org_id)
            except OrgNotRouted:
                bind_cluster(cluster)
        else:
            bind_cluster(cluster)
        return org_id

    @contextmanager
    def _org_write(self, request: HttpRequest, org_id: str | None) -> Iterator[None]:
        """A POST of one org's page: one transaction on its primary, under its lock."""
        if request.method != "POST" or org_id is None:
            yield
            return
        with org_admin_write(org_id):
            yield

    def _on_org_cluster(
        self,
        request: HttpRequest,
        object_id: str | None,
        view: Callable[[], HttpResponse],
        *,
        listing: bool = False,
    ) -> HttpResponse:
        try:
            org_id = self._bind(request, object_id, listing=listing)
            with self._org_write(request, org_id):
                return view()
        except OrgMoving as exc:
            logger.warning("admin write refused: org moving or moved (%s %s)", request.method, request.path)
            saved = (
                # a bulk action writes row by row, each in its own transaction
                "the selected rows before it were saved, that row and the rest were not"
                if listing
                else "nothing was saved"
            )
            return self._refusal(
                request,
                503,
                "This organization is being moved to another database cluster, or has just moved: "
                f"{saved}. Retry in a few seconds.",
                retry_after=exc.wait,
            )
        except ClusterNotConfigured:
            logger.error("admin: %s names an org on a cluster this server has no database for", request.path)
            return self._refusal(
                request,
                503,
                "This organization's database cluster is not available on this server: nothing was saved. "
                "Retry later.",
                retry_after=NOT_CONFIGURED_RETRY_SECONDS,
            )

    def _refusal(
        self, request: HttpRequest, status: int, message: str, retry_after: int | None = None
    ) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "title": "Not done", "message": message}
        response = TemplateResponse(request, "admin/org_refusal.html", context, status=status)
        if retry_after is not None:
            response["Retry-After"] = str(retry_after)
        return response

    # --- the views ------------------------------------------------------------------
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        def view() -> HttpResponse:
            context = extra_context
            if len(topology().clusters) > 1:
                context = {**(extra_context or {}), "subtitle": f"database cluster {current_cluster().name}"}
            return super(OrgClusterAdmin, self).changelist_view(request, context)

        return self._on_org_cluster(request, None, view, listing=True)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return self._on_org_cluster(
            request,
            object_id,
            lambda: super(OrgClusterAdmin, self).changeform_view(request, object_id, form_url, extra_context),
        )

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return self._on_org_cluster(
            request,
            object_id,
            lambda: super(OrgClusterAdmin, self).delete_view(request, object_id, extra_context),
        )

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return self._on_org_cluster(
            request,
            object_id,
            lambda: super(OrgClusterAdmin, self).history_view(request, object_id, extra_context),
        )
