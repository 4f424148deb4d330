from django.apps import AppConfig


class EdgecacheConfig(AppConfig):
    name = "edgecache"
    verbose_name = "Edge cache"
