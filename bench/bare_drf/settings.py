"""A fresh DRF project's settings, trimmed to what an API without auth needs: the same
database (psycopg pool, like the project's), no sessions, no auth, no CSRF."""

import os

import environ

env = environ.Env()
environ.Env.read_env(os.path.join(os.path.dirname(__file__), "../../.env"), overwrite=False)

SECRET_KEY = "bench-bare-drf-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework", "bench.bare_drf"]
MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "bench.bare_drf.urls"
APPEND_SLASH = False
DATABASES = {"default": env.db_url_config(env.str("DATABASE_URL"))}
DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 4, "max_size": 20}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
