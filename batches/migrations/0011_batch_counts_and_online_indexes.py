import django.db.models.deletion
from django.db import migrations, models

from batches.operations import AddIndexOnline


def count_batches(apps, schema_editor):
    from batches.store import rebuild_batch_counts

    rebuild_batch_counts(batch_model=apps.get_model("batches", "Batch"),
                         count_model=apps.get_model("batches", "BatchCount"))


class Migration(migrations.Migration):
    # Concurrent index builds cannot run inside a transaction; each operation below commits on its own.
    atomic = False

    dependencies = [
        ('batches', '0010_audit_trail'),
    ]

    operations = [
        migrations.CreateModel(
            name='BatchCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(max_length=64)),
                ('all_failed', models.BooleanField(default=False)),
                ('n', models.BigIntegerField(default=0)),
                ('connection', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+',
                                                 to='batches.connection')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('connection', 'status', 'all_failed'),
                                                        name='batch_count_unique')],
            },
        ),
        migrations.CreateModel(
            name='SnapshotRetention',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('thinned_until', models.DateTimeField()),
            ],
        ),
        migrations.RunPython(count_batches, migrations.RunPython.noop, atomic=True),
        AddIndexOnline(
            model_name='batch',
            index=models.Index(condition=models.Q(('completed_requests__lte', 0), ('failed_requests__gt', 0),
                                                  ('status', 'completed')),
                               fields=['-created_at', '-id'], name='batch_all_failed_newest'),
        ),
        AddIndexOnline(
            model_name='batch',
            index=models.Index(condition=models.Q(('status__in', ('completed', 'failed', 'expired', 'cancelled'))),
                               fields=['last_changed_at'], name='batch_finished_changed'),
        ),
    ]
