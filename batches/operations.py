"""Migration operations shared by batches/migrations."""

from django.contrib.auth.management import create_permissions
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db.migrations.operations import AddIndex


class AddIndexOnline(AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on PostgreSQL, so the batch and snapshot tables keep taking writes while the
    index is built (the migration must be `atomic = False`); a plain CREATE INDEX on SQLite, which has no
    such thing."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


def give_permissions(apps, app_label: str, codenames: list[str], groups: list[str]) -> None:
    """Give the roles (groups) `groups` these permissions of `app_label`, creating the permissions first (a
    migration runs before Django's post_migrate signal would create them)."""
    app_config = apps.get_app_config(app_label)
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    permissions = apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label=app_label, codename__in=codenames)
    for group in apps.get_model("auth", "Group").objects.filter(name__in=groups):
        group.permissions.add(*permissions)
