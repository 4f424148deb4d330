"""Fan-out inside one process, our hub vs the channels-redis layer (make bench-realtime).

The choice in docs/realtime.md ("Events"), measured: 1000 receivers of one org in one
process, EVENTS events; time from publish to each receiver having the event.

- hub: realtime/hub.py (one Pub/Sub subscription per process, a bounded queue per
  socket), events published by realtime/publishing.py (XADD + PUBLISH);
- channel layer: channels-redis RedisChannelLayer, 1000 channels in one group,
  `group_send` (capacity raised so nothing is dropped), one `receive` loop per channel,
  as Channels consumers do.

No sockets, no HTTP: only the part the two designs do differently.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from channels_redis.core import RedisChannelLayer
from django.conf import settings

from realtime.hub import current_hub
from realtime.publishing import event_publish


def summary(values: list[float]) -> str:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return f"p50 {at(0.5):7.2f}  p95 {at(0.95):7.2f}  p99 {at(0.99):7.2f}  mean {statistics.fmean(ordered) * 1000:7.2f} ms"


async def hub_fanout(receivers: int, events: int) -> list[float]:
    org_id = str(uuid.uuid4())
    hub = current_hub()
    subscribers = [await hub.subscribe(org_id=org_id, queue_size=events + 1) for _ in range(receivers)]
    latencies: list[float] = []

    async def receive(subscriber) -> None:
        for _ in range(events):
            event = await subscriber.queue.get()
            latencies.append(time.perf_counter() - float(event.frame.split('"sent":', 1)[1].split("}", 1)[0]))

    tasks = [asyncio.create_task(receive(s)) for s in subscribers]
    for _ in range(events):
        await asyncio.to_thread(
            lambda: event_publish(org_id=org_id, event_type="bench", data={"sent": time.perf_counter()})
        )
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    for subscriber in subscribers:
        await hub.unsubscribe(subscriber)
    return latencies


async def layer_fanout(receivers: int, events: int) -> list[float]:
    layer = RedisChannelLayer(hosts=[settings.REDIS_URL], capacity=events * receivers, expiry=60)
    group = f"bench{uuid.uuid4().hex}"
    channels = [await layer.new_channel() for _ in range(receivers)]
    for channel in channels:
        await layer.group_add(group, channel)
    latencies: list[float] = []

    async def receive(channel: str) -> None:
        for _ in range(events):
            message = await layer.receive(channel)
            latencies.append(time.perf_counter() - message["sent"])

    tasks = [asyncio.create_task(receive(c)) for c in channels]
    await asyncio.sleep(0.2)
    for _ in range(events):
        await layer.group_send(group, {"type": "bench", "sent": time.perf_counter()})
        await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    for channel in channels:
        await layer.group_discard(group, channel)
    await layer.flush()
    return latencies


async def run(args: argparse.Namespace) -> None:
    hub = await hub_fanout(args.receivers, args.events)
    layer = await layer_fanout(args.receivers, args.events)
    print(f"\nin-process fan-out: {args.receivers} receivers x {args.events} events")
    print(f"hub (Pub/Sub + bounded queues):  {summary(hub)}   received {len(hub)}")
    print(f"channels-redis group_send:       {summary(layer)}   received {len(layer)}")
    print(
        f"ratio p95 layer/hub: {sorted(layer)[int(0.95 * len(layer))] / sorted(hub)[int(0.95 * len(hub))]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    args = parser.parse_args()
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
