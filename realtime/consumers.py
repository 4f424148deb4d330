"""The org's live event stream: `ws://HOST/v2/realtime/orgs/{org_id}/` (CONTRACT §5).

Every refusal is decided before `accept()`, and nothing is held for a refused socket.
The protocol offers no close code before the handshake (ASGI turns a close before
accept into HTTP 403), so a refused socket is accepted and closed at once with its code.

Resume without gap or duplicate: the socket joins the live feed first, then reads the
stream after last_event_id, then sends live events whose id is greater than the last
one sent. Live announcements and stream entries come from one atomic Lua script, so
an event is either in the replay or arrives live (or both, and is sent once).
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

import redis
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError

from accounts.selectors import token_find
from monitoring.metrics import realtime_connections, realtime_rejections, realtime_slow_consumer_disconnects
from realtime.access import NOT_A_MEMBER, TOKEN_INVALID
from realtime.connection_limits import (
    ConnectionSlot,
    SlotOutcome,
    lease_renewer,
    limit_reason,
    slot_acquire,
    slot_release,
)
from realtime.event_ids import event_id_key
from realtime.hub import SLOW_CONSUMER, Subscriber, current_hub
from realtime.replay import events_since, stream_position
from realtime.stats import counter_add
from realtime.token_auth import query_params, token_for, token_from_scope
from tenancy.selectors import membership_get

logger = logging.getLogger(__name__)

UNAVAILABLE = (1013, "Realtime is temporarily unavailable; try again later")
RESYNC_REQUIRED = {
    "type": "resync_required",
    "detail": "Events after last_event_id are no longer kept: refetch by REST. "
    "Live events follow on this socket, after the ready message.",
}


@database_sync_to_async
def _is_member(*, org_id: uuid.UUID, user: Any) -> bool:
    return membership_get(org_id=org_id, user=user) is not None


@database_sync_to_async
def _access_lost(*, token: str, org_id: uuid.UUID) -> tuple[int, str] | None:
    """Why this socket may no longer stay open (token, then membership), or None."""
    found = token_find(token=token)
    if found is None:
        return TOKEN_INVALID
    if membership_get(org_id=org_id, user=found.user) is None:
        return NOT_A_MEMBER
    return None


class OrgEventsConsumer(AsyncWebsocketConsumer):
    slot: ConnectionSlot | None = None
    subscriber: Subscriber | None = None
    tasks: tuple[asyncio.Task[None], ...] = ()

    async def connect(self) -> None:
        org_id: uuid.UUID = self.scope["url_route"]["kwargs"]["org_id"]
        params = query_params(self.scope)
        token = token_from_scope(self.scope)
        token_row = await self._member_token_or_refuse(token, org_id)
        if token is None or token_row is None:
            return
        user = token_row.user
        last_event_id = params.get("last_event_id")
        if last_event_id is not None:
            try:
                event_id_key(last_event_id)
            except ValueError:
                await self._refuse(
                    4400, "Invalid last_event_id: expected an event_id such as 1732800000000-0"
                )
                return
        slot = ConnectionSlot(connection_id=uuid.uuid4().hex, user_id=str(user.pk), org_id=str(org_id))
        try:
            outcome = await slot_acquire(slot=slot)
        except (redis.RedisError, OSError) as error:
            logger.error("realtime connection refused, Redis unavailable: %s", error)
            await self._refuse(*UNAVAILABLE)
            return
        if outcome is not SlotOutcome.GRANTED:
            code, rejection, reason = limit_reason(outcome)
            await self._refuse(code, reason, rejection=rejection)
            return
        self.slot = slot
        lease_renewer().add(slot, self._lease_lost)
        realtime_connections.inc()
        await self.accept()
        try:
            self.subscriber = await current_hub().subscribe(
                org_id=str(org_id),
                queue_size=settings.REALTIME_SOCKET_QUEUE_SIZE,
                user_id=str(user.pk),
                token_digest=token_row.digest,
            )
        except (redis.RedisError, OSError, TimeoutError) as error:
            logger.error("realtime feed unavailable: %s", error)
            await self._release()
            await self.close(*UNAVAILABLE)
            return
        loop = asyncio.get_running_loop()
        self.tasks = (
            loop.create_task(self._pump(last_event_id)),
            loop.create_task(self._supervise()),
            loop.create_task(self._watch_access(token=token, org_id=org_id, expires_at=token_row.expiry)),
        )

    async def _member_token_or_refuse(self, token: str | None, org_id: uuid.UUID) -> Any | None:
        """The token's row, if it is valid and its user a member; else None, the socket
        refused (4401, 4404; 1013 when the database is unreachable: no hang, no 1011)."""
        try:
            token_row = await token_for(token) if token else None
            is_member = token_row is not None and await _is_member(org_id=org_id, user=token_row.user)
        except DatabaseError as error:
            logger.error("realtime connection refused, database unavailable: %s", error)
            await self._refuse(*UNAVAILABLE)
            return None
        if token_row is None:
            await self._refuse(4401, "Missing or invalid token", rejection="auth")
            return None
        if not is_member:
            await self._refuse(4404, "Not found", rejection="not_member")
            return None
        return token_row

    async def _refuse(self, code: int, reason: str, *, rejection: str | None = None) -> None:
        if rejection is not None:
            realtime_rejections.labels(reason=rejection).inc()
            await counter_add(f"rejections:{rejection}")
        await self.accept()
        await self.close(code=code, reason=reason)

    async def _pump(self, last_event_id: str | None) -> None:
        """Send until cancelled; a failure closes the socket instead of leaving it mute."""
        try:
            await self._send_events(last_event_id)
        except redis.RedisError as error:  # the replay could not read the stream
            logger.error("realtime replay failed: %s", error)
            if self.subscriber is not None:
                self.subscriber.close(UNAVAILABLE)
        except OSError:  # the client went away mid-send (uvicorn's ClientDisconnected)
            if self.subscriber is not None:
                self.subscriber.close((1000, "closed"))

    async def _send_events(self, last_event_id: str | None) -> None:
        """Replay what the client missed, say `ready`, then send live events, each once.

        `ready.last_event_id` is where this socket's live feed starts: every later
        event is sent. A client that reconnects with it misses nothing, even if it
        received no event before.
        """
        assert self.subscriber is not None and self.slot is not None
        deliveries = current_hub().deliveries
        if last_event_id is None:
            position = await stream_position(org_id=self.slot.org_id)
        else:
            replay = await events_since(org_id=self.slot.org_id, last_event_id=last_event_id)
            if not replay.complete:
                await self.send(text_data=json.dumps(RESYNC_REQUIRED))
            for _, frame in replay.frames:
                await self.send(text_data=frame)
                deliveries.record(latency_seconds=None)
            position = replay.position
        await self.send(text_data=json.dumps({"type": "ready", "last_event_id": position}))
        last_sent: tuple[int, int] | None = event_id_key(position)
        while True:
            event = await self.subscriber.queue.get()
            if last_sent is not None:
                if event_id_key(event.event_id) <= last_sent:
                    continue  # already replayed, or before this socket's start
                last_sent = None  # live events come in stream order: no more checks needed
            await self.send(text_data=event.frame)
            deliveries.record(latency_seconds=time.time() - event.committed_at)
            if event.poke:
                await self.send(text_data=event.poke)

    async def _supervise(self) -> None:
        """Close the socket when the hub drops it (slow consumer, feed restart) or its
        lease is lost (see LeaseRenewer)."""
        assert self.subscriber is not None
        code, reason = await self.subscriber.closing
        if (code, reason) == SLOW_CONSUMER:
            realtime_slow_consumer_disconnects.inc()
            await counter_add("slow_consumer_disconnects")
            await self._shut(code, reason, release_slot=False)
        else:
            await self._shut(code, reason, release_slot=True)

    async def _watch_access(self, *, token: str, org_id: uuid.UUID, expires_at: Any) -> None:
        """The backstop behind the hub's revocation broadcast: re-check the token and
        membership now (a revocation may have come between the connect check and the
        hub subscription), every REALTIME_ACCESS_RECHECK_SECONDS, and at the token's
        expiry (closed then with 4401, on time)."""
        interval = settings.REALTIME_ACCESS_RECHECK_SECONDS
        while self.subscriber is not None:
            try:
                lost = await _access_lost(token=token, org_id=org_id)
            except Exception:  # the database is away: keep the socket, ask again later
                logger.warning("realtime: access re-check failed", exc_info=True)
                lost = None
            if lost is not None:
                if self.subscriber is not None:
                    self.subscriber.close(lost)
                return
            until_expiry = expires_at.timestamp() - time.time() if expires_at is not None else interval
            await asyncio.sleep(max(0.05, min(interval, until_expiry + 0.01)))

    def _lease_lost(self, outcome: SlotOutcome) -> None:
        if self.subscriber is not None:
            code, _, reason = limit_reason(outcome)
            self.subscriber.close((code, reason))

    async def _shut(self, code: int, reason: str, *, release_slot: bool) -> None:
        """Stop sending and leave the hub at once; the close frame may wait for a slow
        client. A slow consumer keeps its slot until it really disconnects or its lease
        lapses (no renewal from here on), so a client that never reads cannot pile up
        half-closed sockets beyond its cap."""
        pump = self.tasks[0]
        pump.cancel()
        await self._leave_hub()
        if release_slot:
            await self._release()
        elif self.slot is not None:
            lease_renewer().discard(self.slot)  # no renewal: the lease lapses unless it disconnects first
        await self.close(code=code, reason=reason)

    async def _leave_hub(self) -> None:
        if self.subscriber is not None:
            subscriber, self.subscriber = self.subscriber, None
            subscriber.close((1000, "closed"))
            await current_hub().unsubscribe(subscriber)

    async def _release(self) -> None:
        if self.slot is None:
            return
        slot, self.slot = self.slot, None
        lease_renewer().discard(slot)
        realtime_connections.dec()
        with contextlib.suppress(redis.RedisError, OSError):
            await slot_release(slot=slot)  # else the lease expires by itself

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients have nothing to say on this socket; messages are ignored."""

    async def disconnect(self, code: int) -> None:
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        await self._leave_hub()
        await self._release()


class UnknownRouteConsumer(AsyncWebsocketConsumer):
    """Any other websocket path (or an org id that is not a UUID): 4404, not a 500."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=4404, reason="Not found")
