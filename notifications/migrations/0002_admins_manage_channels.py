from django.db import migrations

from batches.operations import give_permissions

CODENAMES = ["add_channel", "change_channel", "delete_channel", "view_channel", "view_event", "view_delivery"]


def give_channels_to_admins(apps, schema_editor):
    """Admins manage alert channels (change_channel guards their pages) and read events and deliveries."""
    give_permissions(apps, "notifications", CODENAMES, ["Admin"])


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0001_initial"),
        ("batches", "0002_roles"),
    ]

    operations = [
        migrations.RunPython(give_channels_to_admins, migrations.RunPython.noop),
    ]
