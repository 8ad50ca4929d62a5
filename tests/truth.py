"""Comparing what we stored with the simulator's truth (`/_sim/batches`)."""

from batches.models import Batch
from batches.payload import batch_fields


def mismatches(connection, truth: list[dict]) -> list[str]:
    stored = {b.batch_id: b for b in Batch.objects.filter(connection=connection)}
    problems = []
    if set(stored) != {p["id"] for p in truth}:
        problems.append(f"ids differ: {len(stored)} stored vs {len(truth)} in the API")
    for payload in truth:
        batch = stored.get(payload["id"])
        if batch is None:
            continue
        for name, value in batch_fields(payload).items():
            if getattr(batch, name) != value:
                problems.append(f"{payload['id']}.{name}: stored {getattr(batch, name)!r}, API {value!r}")
    return problems
