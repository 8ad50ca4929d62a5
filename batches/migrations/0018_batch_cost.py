"""A batch's estimated cost as a stored column, so that the usage page ranks a period's batches by cost by index
(a CASE over every batch of the period took about a second at 1,000,000 batches); its fill is usage 0003, after
the price table exists. Most failed requests get an index too."""

from django.db import migrations, models

from batches.operations import AddIndexOnline


class Migration(migrations.Migration):
    # Concurrent index builds cannot run inside a transaction; each operation below commits on its own.
    atomic = False

    dependencies = [
        ("batches", "0017_webhooks_and_sync_counters"),
    ]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="cost_usd",
            field=models.FloatField(blank=True, editable=False, null=True),
        ),
        AddIndexOnline(
            model_name="batch",
            index=models.Index(condition=models.Q(cost_usd__gt=0), fields=["-cost_usd", "-id"], name="batch_most_cost"),
        ),
        AddIndexOnline(
            model_name="batch",
            index=models.Index(condition=models.Q(failed_requests__gt=0), fields=["-failed_requests", "-id"],
                               name="batch_most_failed"),
        ),
    ]
