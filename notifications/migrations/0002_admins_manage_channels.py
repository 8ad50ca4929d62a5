from django.contrib.auth.management import create_permissions
from django.db import migrations

CODENAMES = ["add_channel", "change_channel", "delete_channel", "view_channel", "view_event", "view_delivery"]


def give_channels_to_admins(apps, schema_editor):
    """Admins manage alert channels (change_channel guards their pages) and read events and deliveries."""
    app_config = apps.get_app_config("notifications")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    permissions = apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label="notifications", codename__in=CODENAMES)
    for group in Group.objects.filter(name="Admin"):
        group.permissions.add(*permissions)


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0001_initial"),
        ("batches", "0002_roles"),
    ]

    operations = [
        migrations.RunPython(give_channels_to_admins, migrations.RunPython.noop),
    ]
