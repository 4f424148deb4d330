"""What finance announces on the realtime feed: `<kind>.created|updated|deleted` with the
entry as the REST API renders it, published after commit (never for a rollback)."""

from finance.api.serializers import EntryOutput
from finance.models import ENTRY_MODELS, FinanceEntry
from realtime.publishing import event_publish_on_commit

_KIND_OF = {model: kind for kind, model in ENTRY_MODELS.items()}


def entry_event_on_commit(*, entry: FinanceEntry, action: str) -> None:
    kind = _KIND_OF[type(entry)]
    data = dict(EntryOutput(entry).data)  # rendered now: a deleted entry cannot be later
    event_publish_on_commit(org_id=str(entry.org_id), event_type=f"{kind}.{action}", data=data)
