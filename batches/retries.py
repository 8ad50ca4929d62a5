"""Files for new batches, built from the archive: a retry's lines, parts within the API's per-batch limits, a
retry's metadata, and a family's merged results. No API calls here (actions.submit sends what this builds).

A retry file holds the original input lines of the chosen requests, copied byte for byte in one sequential pass
over the archived input (the request index says where each line is), never the whole file in memory: memory
stays at one read chunk, one line and one database chunk of positions.
"""

import json
import tempfile
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.core.files import File
from django.db.models import Q

from . import archive
from .models import ArchivedFile, Batch, BatchRequest, RequestOutcome

# What a retry may choose from: the requests that did not succeed and are worth sending again.
RETRYABLE = {"failed": RequestOutcome.FAILED, "expired": RequestOutcome.EXPIRED, "not_run": RequestOutcome.NOT_RUN}
# The API's metadata limits (CONTRACT §5.6).
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
INTENT_KEY, RETRY_OF_KEY = "batchboard_intent", "retry_of"
# A rough tokenizer: about 4 bytes of a request line a token (no tokenizer is vendored; the pages say so).
BYTES_PER_TOKEN = 4


class ArchiveIncomplete(Exception):
    """An archived file ended before a line the request index points to."""


def retry_requests(batch: Batch, *, outcomes: Iterable[str], codes: Iterable[str] = ()):
    """The batch's indexed requests of the chosen outcomes (failed, expired, not_run), narrowed to the chosen
    error codes when any are given."""
    chosen = [RETRYABLE[name] for name in outcomes if name in RETRYABLE]
    rows = BatchRequest.objects.filter(batch=batch, outcome__in=chosen)
    codes = [code for code in codes if code]
    if codes:
        rows = rows.filter(Q(error_code__in=codes))
    return rows


def input_lines(archived: ArchivedFile, positions: Iterable[tuple[int, int]]) -> Iterator[bytes]:
    """The lines at `positions` ((offset, length), ascending, without their newline) of an archived file, each
    ending with a newline, read in one pass from its start."""
    chunks, buf, base = archive.stream(archived), b"", 0  # buf holds the file's bytes from offset `base` on
    for offset, length in positions:
        end = offset + length
        if offset < base:
            raise ValueError("positions must ascend")
        while base + len(buf) < end:
            chunk = next(chunks, None)
            if chunk is None:
                raise ArchiveIncomplete(f"{archived.file_id} ends before byte {end}")
            if base + len(buf) <= offset:  # nothing held is wanted
                base, buf = base + len(buf), chunk
            else:
                keep = max(offset - base, 0)
                buf, base = buf[keep:] + chunk, base + keep
        yield buf[offset - base:end - base] + b"\n"


def retry_lines(batch: Batch, rows) -> Iterator[bytes]:
    """The original input lines of `rows` (a retry_requests queryset), in input order."""
    archived = ArchivedFile.objects.get(batch=batch, kind="input", state=ArchivedFile.STORED)
    positions = (rows.filter(input_offset__isnull=False).order_by("input_offset")
                 .values_list("input_offset", "input_length"))
    return input_lines(archived, positions.iterator(chunk_size=2000))


def write_parts(lines: Iterable[bytes], *, prefix: str, max_requests: int | None = None,
                max_bytes: int | None = None) -> list[dict]:
    """Write `lines` into files of at most BATCH_MAX_REQUESTS lines and BATCH_MAX_BYTES bytes each, in the
    archive storage under `prefix`. Returns one {"name", "requests", "bytes"} per file, in order."""
    max_requests = max_requests or settings.BATCH_MAX_REQUESTS
    max_bytes = max_bytes or settings.BATCH_MAX_BYTES
    parts, current, count, size = [], None, 0, 0
    try:
        for line in lines:
            if current is None or count >= max_requests or (count and size + len(line) > max_bytes):
                if current is not None:
                    parts.append(_save_part(current, f"{prefix}/part-{len(parts) + 1}.jsonl", count, size))
                current, count, size = tempfile.TemporaryFile(), 0, 0
            current.write(line)
            count, size = count + 1, size + len(line)
        if current is not None:
            parts.append(_save_part(current, f"{prefix}/part-{len(parts) + 1}.jsonl", count, size))
    finally:
        if current is not None:
            current.close()
    return parts


def _save_part(handle, name: str, count: int, size: int) -> dict:
    handle.seek(0)
    stored = archive.storage().save(name, File(handle, name=name))
    handle.close()
    return {"name": stored, "requests": count, "bytes": size}


def count_parts(sizes: Iterable[int]) -> int:
    """How many batches write_parts makes of lines of these sizes."""
    parts, count, size = 0, 0, 0
    for length in sizes:
        if not parts or count >= settings.BATCH_MAX_REQUESTS or (count and size + length > settings.BATCH_MAX_BYTES):
            parts, count, size = parts + 1, 0, 0
        count, size = count + 1, size + length
    return parts


def retry_metadata(parent: Batch) -> tuple[list[list[str]], list[str]]:
    """A retry's metadata, as ordered pairs: retry_of (the parent's id), then the parent's own pairs in their
    order, trimmed to the API's limits with the part's batchboard_intent counted in. Also what was trimmed,
    in words for the page."""
    pairs, trimmed = [[RETRY_OF_KEY, parent.batch_id[:METADATA_VALUE_CHARS]]], []
    original = parent.metadata if isinstance(parent.metadata, dict) else {}
    for key, value in original.items():
        key = str(key)
        if key in (RETRY_OF_KEY, INTENT_KEY):
            trimmed.append(f"“{key}” is replaced by this retry's own")
            continue
        if len(key) > METADATA_KEY_CHARS:
            trimmed.append(f"“{key[:40]}…” dropped: keys have at most {METADATA_KEY_CHARS} characters")
            continue
        if len(pairs) + 1 >= METADATA_PAIRS:  # one pair is batchboard_intent's
            trimmed.append(f"“{key}” dropped: at most {METADATA_PAIRS} pairs, two of them Batchboard's")
            continue
        value = value if isinstance(value, str) else json.dumps(value)
        if len(value) > METADATA_VALUE_CHARS:
            trimmed.append(f"“{key}” cut to {METADATA_VALUE_CHARS} characters")
            value = value[:METADATA_VALUE_CHARS]
        pairs.append([key, value])
    return pairs, trimmed


def batch_metadata(pairs: list[list[str]], intent: str) -> dict:
    """The metadata a part's batch is created with: retry_of first when there is one, then batchboard_intent,
    then the other pairs in their order."""
    head = [pair for pair in pairs if pair[0] == RETRY_OF_KEY]
    return dict([*head, [INTENT_KEY, intent], *[pair for pair in pairs if pair[0] != RETRY_OF_KEY]])


# ----- merged results ----------------------------------------------------------------------------
def merged_lines(family: list[Batch], kind: str) -> Iterator[bytes]:
    """One output JSONL (kind "output") with the latest success of every custom_id of the family (`family`
    newest generation first), or one error JSONL (kind "error") with the latest result of each custom_id that
    never succeeded; a request that never ran and has no line gets one saying so. Each batch's lines are
    read in one pass over its archived file."""
    ids = [batch.pk for batch in family]
    succeeded = set(BatchRequest.objects.filter(batch_id__in=ids, outcome=RequestOutcome.SUCCEEDED)
                    .values_list("custom_id", flat=True).iterator(chunk_size=5000))
    done: set[str] = set()
    for batch in family:
        rows = BatchRequest.objects.filter(batch=batch)
        if kind == "output":
            rows = rows.filter(outcome=RequestOutcome.SUCCEEDED)
        else:
            rows = rows.exclude(outcome=RequestOutcome.SUCCEEDED)
        by_file = {False: [], True: []}
        lineless = []
        for custom_id, offset, length, in_error in (rows.order_by("result_offset").values_list(
                "custom_id", "result_offset", "result_length", "result_in_error_file").iterator(chunk_size=5000)):
            if custom_id in done or (kind == "error" and custom_id in succeeded):
                continue
            done.add(custom_id)
            if offset is None:
                lineless.append(custom_id)
            else:
                by_file[in_error].append((offset, length))
        for in_error, positions in by_file.items():
            if positions:
                archived = ArchivedFile.objects.get(batch=batch, kind="error" if in_error else "output",
                                                    state=ArchivedFile.STORED)
                yield from input_lines(archived, positions)
        for custom_id in lineless:
            yield json.dumps({"custom_id": custom_id, "response": None, "error": {
                "code": "not_run", "message": f"No result line: the request never ran in {batch.batch_id}."}}
            ).encode() + b"\n"
