from django.conf import settings
from django.db import migrations

from batches.operations import give_permissions
from usage import prices, rollup

CODENAMES = ["add_modelprice", "change_modelprice", "delete_modelprice", "view_modelprice",
             "add_budget", "change_budget", "delete_budget", "view_budget"]


def seed_prices(apps, schema_editor):
    """The price table starts as MODEL_PRICES_JSON when set, else as the starter table; from now on the table
    edited in the app is the only one read."""
    model_price = apps.get_model("usage", "ModelPrice")
    if settings.MODEL_PRICES is not None:
        rows = prices.seed_rows(model_price, settings.MODEL_PRICES, source="MODEL_PRICES_JSON",
                                valid_from=prices.STARTER_VALID_FROM)
    else:
        rows = prices.seed_rows(model_price, prices.STARTER_PRICES, source=prices.STARTER_SOURCE,
                                valid_from=prices.STARTER_VALID_FROM)
    model_price.objects.bulk_create(rows)


def fill_rollup(apps, schema_editor):
    rollup.rebuild(batch_model=apps.get_model("batches", "Batch"), usage_model=apps.get_model("usage", "DailyUsage"),
                   duration_model=apps.get_model("usage", "DailyDuration"))


def give_prices_and_budgets_to_admins(apps, schema_editor):
    """Admins edit prices and budgets (change_modelprice and change_budget guard their pages)."""
    give_permissions(apps, "usage", CODENAMES, ["Admin"])


class Migration(migrations.Migration):

    dependencies = [
        ("usage", "0001_usage_prices_budgets"),
        ("batches", "0002_roles"),
    ]

    operations = [
        migrations.RunPython(seed_prices, migrations.RunPython.noop),
        migrations.RunPython(fill_rollup, migrations.RunPython.noop),
        migrations.RunPython(give_prices_and_budgets_to_admins, migrations.RunPython.noop),
    ]
