"""An index for the sync's "active batches of this connection" query, built without blocking writes on
PostgreSQL (CREATE INDEX CONCURRENTLY, outside a transaction); a plain CREATE INDEX elsewhere."""

from django.db import migrations, models

from batches.operations import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("batches", "0008_sync_budget_and_order")]

    operations = [
        AddIndexOnline(
            model_name="batch",
            index=models.Index(fields=["connection", "status"], name="batch_connection_status"),
        ),
    ]
