"""The request index: every request of an archived batch in BatchRequest, read once from its archived input,
output and error files (batches/archive.py)."""


def index_batch(batch_pk: int) -> None:
    """Index the batch's archived files into BatchRequest rows. Idempotent and resumable: safe to run again
    after a killed worker, and a no-op once every stored file is indexed."""
    raise NotImplementedError
