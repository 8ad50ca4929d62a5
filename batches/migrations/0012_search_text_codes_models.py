"""The list's search also matches models, validation error codes and `key:value` metadata pairs, through the
one indexed search_text column: recompute it for the batches stored before (in chunks)."""

from django.db import migrations

FIELDS = ["batch_id", "input_file_id", "output_file_id", "error_file_id", "model", "errors", "metadata"]


def refill_search_text(apps, schema_editor):
    from batches.payload import search_text

    Batch = apps.get_model("batches", "Batch")
    chunk = []
    for batch in Batch.objects.only(*FIELDS).iterator(chunk_size=2000):
        batch.search_text = search_text({name: getattr(batch, name) for name in FIELDS})
        chunk.append(batch)
        if len(chunk) == 2000:
            Batch.objects.bulk_update(chunk, ["search_text"])
            chunk = []
    Batch.objects.bulk_update(chunk, ["search_text"])


class Migration(migrations.Migration):
    atomic = False  # each chunk commits on its own: a big table is not held in one transaction
    dependencies = [("batches", "0011_batch_counts_and_online_indexes")]

    operations = [migrations.RunPython(refill_search_text, migrations.RunPython.noop, elidable=True)]
