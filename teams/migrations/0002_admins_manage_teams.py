"""Admins manage teams and grants. No team is created: with none, every user keeps the access they had."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMIN = [("teams", f"{action}_{model}") for model in ("team", "teamgrant")
         for action in ("add", "change", "delete", "view")]


def add_team_permissions(apps, schema_editor):
    app_config = apps.get_app_config("teams")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name="Admin"):
        for app_label, codename in ADMIN:
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_team_permissions(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    for group in apps.get_model("auth", "Group").objects.filter(name="Admin"):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="teams"))


class Migration(migrations.Migration):
    dependencies = [
        ("teams", "0001_initial"),
        ("batches", "0002_roles"),
    ]

    operations = [migrations.RunPython(add_team_permissions, remove_team_permissions)]
