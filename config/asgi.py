"""ASGI entry point: websockets (realtime, CONTRACT §5) and any HTTP served over ASGI.

REST is served by gunicorn (WSGI) in production; see docs/realtime.md "Serving".
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_http = get_asgi_application()  # sets Django up before the consumers are imported

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.body_limit import ASGIBodyLimit  # noqa: E402
from realtime.origin import WebsocketOriginCheck  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIBodyLimit(django_http),
        "websocket": WebsocketOriginCheck(URLRouter(websocket_urlpatterns)),
    }
)
