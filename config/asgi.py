"""ASGI entry point, for websockets (realtime) and any HTTP served over ASGI."""

import os

from django.core.asgi import get_asgi_application

from config.body_limit import ASGIBodyLimit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = ASGIBodyLimit(get_asgi_application())
