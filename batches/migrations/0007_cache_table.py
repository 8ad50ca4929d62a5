"""The database cache's table (CACHES["default"] is DatabaseCache unless CACHE_URL names Redis), so that
`migrate` alone prepares a database: log-in throttling reads the cache on the first request.

Django's `createcachetable` does the work: it creates the table of every database cache in settings,
skips a table that already exists, and does nothing when no cache uses the database. Switching CACHE_URL
from Redis to the database later needs `python manage.py createcachetable` once.
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("batches", "0006_walk_cursor")]

    # Reversing leaves the table: it holds only cache entries, and may predate this migration.
    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop, elidable=True)]
