from django.db import migrations, models
from django.db.models import F


def mark_existing_connections_imported(apps, schema_editor):
    """Connections that have completed a full walk are already imported: their changes alert from now on.
    One still importing (or never synced) is marked when its first walk completes, like a new one."""
    Connection = apps.get_model("batches", "Connection")
    Connection.objects.filter(last_full_walk_at__isnull=False).update(imported_at=F("last_full_walk_at"))


class Migration(migrations.Migration):

    dependencies = [
        ("batches", "0015_submissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="connection",
            name="imported_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(mark_existing_connections_imported, migrations.RunPython.noop),
    ]
