"""An admin paginator that does not count a whole table on every list page.

Django admin counts the rows of every list page (`SELECT count(*)`), which on a table
of hundreds of millions of rows takes seconds. Unfiltered lists use Postgres' own
estimate (`pg_class.reltuples`, summed over the leaf partitions, kept current by autovacuum);
filtered lists (by org, by property) are narrow and keep their exact count.
"""

from functools import cached_property

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet


class EstimatedCountPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or queryset.query.where:
            return super().count
        table = queryset.model._meta.db_table
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(
                """
                SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint
                FROM pg_class c
                WHERE (c.oid = %s::regclass AND c.relkind <> 'p')  -- a plain table, or
                   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)
                """,
                [table, table],
            )
            estimate = cursor.fetchone()[0]
        # A table never analyzed has no estimate yet: count it exactly once it is small.
        return estimate if estimate > 0 else super().count
