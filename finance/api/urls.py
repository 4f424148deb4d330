from django.urls import path

from finance.api.views import EntryDetailApi, EntryListCreateApi, FinanceSummaryApi
from finance.models import ENTRY_MODELS

urlpatterns = [path("finance/summary", FinanceSummaryApi.as_view(), name="finance-summary")]

for kind, model in ENTRY_MODELS.items():
    urlpatterns += [
        path(f"{kind}s", EntryListCreateApi.as_view(model=model), name=f"{kind}-list"),
        path(f"{kind}s/<uuid:entry_id>", EntryDetailApi.as_view(model=model), name=f"{kind}-detail"),
    ]
