"""The archive: copies of finished batches' files in Batchboard's own storage (STORAGES["archive"]: a directory
by default, an S3-compatible bucket with ARCHIVE_S3_BUCKET), kept after the API deletes the originals.

Reading an archived file goes through the two functions below, whatever the storage: `stream` for the whole
file (or its tail from an offset), `read_range` for one request's line.
"""

from collections.abc import Iterator

from django.core.files.storage import storages

from .models import ArchivedFile

CHUNK_BYTES = 1 << 20


def storage():
    return storages["archive"]


def stream(archived: ArchivedFile, *, start: int = 0, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The stored copy's bytes from `start` on, chunk by chunk."""
    with storage().open(archived.name, "rb") as f:
        f.seek(start)
        while chunk := f.read(chunk_size):
            yield chunk


def read_range(archived: ArchivedFile, offset: int, length: int) -> bytes:
    """`length` bytes of the stored copy from `offset`: one request's line, without reading the rest."""
    with storage().open(archived.name, "rb") as f:
        f.seek(offset)
        return f.read(length)
