from django.apps import AppConfig


class DirectoryConfig(AppConfig):
    name = "directory"
    verbose_name = "Org directory"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from directory.services import placement_on_org_saved

        # Every way an org comes to exist (the API, admin, fixtures, benchmarks) places it
        # on the cluster it was written to: no org without a placement.
        post_save.connect(
            placement_on_org_saved, sender="tenancy.Organization", dispatch_uid="directory-place-org"
        )
