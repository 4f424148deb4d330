"""The sender of each device kind."""

from collections.abc import Callable

from push.senders.apns import apns_send
from push.senders.fcm import fcm_send
from push.senders.outgoing import Outgoing, SendResult
from push.senders.webpush import webpush_send

SENDERS: dict[str, Callable[[Outgoing], SendResult]] = {
    "webpush": webpush_send,
    "fcm": fcm_send,
    "apns": apns_send,
}
