"""The three roles. Views check permissions, never these names; the groups just bundle them."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = [("batches", "view_batch"), ("batches", "view_batchsnapshot"), ("batches", "view_auditevent")]
OPERATOR = VIEWER + [
    ("batches", "cancel_batch"),
    ("batches", "download_batch_file"),
    ("batches", "refresh_batch"),
]
ADMIN = OPERATOR + [
    ("batches", f"{action}_connection") for action in ("add", "change", "delete", "view")
] + [("auth", f"{action}_user") for action in ("add", "change", "delete", "view")] + [("auth", "view_group")]
ROLES = {"Viewer": VIEWER, "Operator": OPERATOR, "Admin": ADMIN}


def create_roles(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in codenames:
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
