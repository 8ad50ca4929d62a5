from django.db import migrations

from usage import prices


def price_batches(apps, schema_editor):
    """Batch.cost_usd for every stored batch, from the price table the previous migration filled."""
    prices.reprice(batch_model=apps.get_model("batches", "Batch"), price_model=apps.get_model("usage", "ModelPrice"))


class Migration(migrations.Migration):

    dependencies = [
        ("usage", "0002_seed_prices_fill_rollup"),
        ("batches", "0018_batch_cost"),
    ]

    operations = [
        migrations.RunPython(price_batches, migrations.RunPython.noop),
    ]
