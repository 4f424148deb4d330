"""WSGI entry point: REST is served by gunicorn (see README "Serving")."""

import os

from django.core.wsgi import get_wsgi_application

from config.body_limit import WSGIBodyLimit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = WSGIBodyLimit(get_wsgi_application())
