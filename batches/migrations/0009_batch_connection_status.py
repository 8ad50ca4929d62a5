"""An index for the sync's "active batches of this connection" query, built without blocking writes on
PostgreSQL (CREATE INDEX CONCURRENTLY, outside a transaction); a plain CREATE INDEX elsewhere."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexWithoutBlocking(AddIndexConcurrently):
    """AddIndexConcurrently on PostgreSQL, AddIndex on other databases (SQLite has no CONCURRENTLY)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("batches", "0008_sync_budget_and_order")]

    operations = [
        AddIndexWithoutBlocking(
            model_name="batch",
            index=models.Index(fields=["connection", "status"], name="batch_connection_status"),
        ),
    ]
