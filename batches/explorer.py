"""The results explorer's work beyond the database: what the archive holds for a batch and why its index may
disagree with the API's counts, one request's bodies read from the archived files, and the streamed exports.
The rows themselves are read in selectors (filtered_requests, request_tally)."""

import csv
import json
import logging
from dataclasses import dataclass, field

from django.conf import settings

from . import actions, archive
from .audit import CsvLine, csv_cell
from .models import ArchivedFile, Batch, BatchRequest, RequestOutcome
from .redact import redact, shown

log = logging.getLogger(__name__)

# The most of one line read from the archive and shown on a request's page; a longer line is shown as text, cut.
BODY_LIMIT = 1 << 20
# One message of a conversation is shown up to this many characters.
MESSAGE_LIMIT = 20_000
MESSAGES_SHOWN = 200
# Outcome name (in URLs) -> (the index's value, the Batch field holding the API's count of it, if it has one).
OUTCOMES = {
    "succeeded": (RequestOutcome.SUCCEEDED, "completed_requests"),
    "failed": (RequestOutcome.FAILED, "failed_requests"),
    "expired": (RequestOutcome.EXPIRED, None),
    "cancelled": (RequestOutcome.CANCELLED, None),
    "not_run": (RequestOutcome.NOT_RUN, None),
}
OUTCOME_NAMES = {value: name for name, (value, _) in OUTCOMES.items()}


# ----- what the archive holds ------------------------------------------------------------------------------
@dataclass
class ArchiveState:
    files: dict  # kind -> ArchivedFile
    indexing: bool  # a stored copy is not fully indexed yet
    lines: int  # lines indexed so far, over the batch's files
    malformed: int
    indexed: bool  # some file has been indexed (its rows stay when its copy is removed)
    not_archived: list[str] = field(default_factory=list)  # why there is nothing (or not everything) to explore

    @property
    def version(self) -> tuple:
        return tuple((f.kind, f.state, f.indexed_lines, f.indexed_bytes, f.indexed_at)
                     for f in sorted(self.files.values(), key=lambda f: f.kind))

    @property
    def final_version(self):
        """The version of a complete index (its rows will not change), or None while it may still change."""
        return self.version if self.indexed and not self.indexing else None


def archive_state(batch: Batch) -> ArchiveState:
    files = {f.kind: f for f in ArchivedFile.objects.filter(batch=batch)}
    stored = [f for f in files.values() if f.state == ArchivedFile.STORED]
    return ArchiveState(
        files=files,
        indexing=any(f.indexed_at is None for f in stored),
        lines=sum(f.indexed_lines for f in files.values()),
        malformed=sum(f.malformed_lines for f in files.values()),
        indexed=any(f.indexed_at is not None or f.indexed_lines for f in files.values()),
        not_archived=_not_archived(batch, files),
    )


def _not_archived(batch: Batch, files: dict) -> list[str]:
    """Why the batch's files (or some of them) have no archived copy to index."""
    if not batch.is_terminal:
        return ["The batch has not finished: its files are archived and indexed once it has."]
    if settings.ARCHIVE_FILES == "none":
        return ["Archiving is off (ARCHIVE_FILES=none): Batchboard keeps no copy of a batch's files, so there is "
                "nothing to index."]
    kinds = [kind for kind in ("input", "output", "error") if batch.file_id(kind)]
    if settings.ARCHIVE_FILES == "results" and "input" in kinds and "input" not in files:
        kinds.remove("input")  # not a problem: inputs are not kept, said on the request's page
    if not files and kinds:
        finished = batch.status_since
        if finished and finished < batch.first_seen_at:
            return [f"This batch had finished before Batchboard first saw it; such batches are archived only when "
                    f"they finished within ARCHIVE_BACKFILL_DAYS ({settings.ARCHIVE_BACKFILL_DAYS:g} days)."]
        return ["Its files have not been archived yet: they are copied shortly after a batch finishes."]
    reasons = []
    for kind in kinds:
        archived = files.get(kind)
        if archived is None:
            reasons.append(f"The {kind} file has not been archived yet.")
        elif archived.state == ArchivedFile.PENDING:
            reasons.append(f"The {kind} file is waiting to be copied.")
        elif archived.state == ArchivedFile.FAILED:
            attempts = f"{archived.attempts} attempt{'' if archived.attempts == 1 else 's'}"
            error = shown(archived.last_error or "no reason given")
            retry = ". It is tried again later." if archived.next_attempt_at else ""
            reasons.append(f"Copying the {kind} file failed ({attempts}): {error}{retry}")
        elif archived.state == ArchivedFile.GONE:
            reasons.append(f"The {kind} file was deleted by the API before it could be copied.")
    return reasons


# ----- counts ----------------------------------------------------------------------------------------------
def outcome_cards(batch: Batch, tally: list[tuple]) -> list[dict]:
    """Requests per outcome in the index, beside the API's own count where it keeps one."""
    per_outcome = {}
    for outcome, _, n in tally:
        per_outcome[outcome] = per_outcome.get(outcome, 0) + n
    cards = []
    for name, (value, api_field) in OUTCOMES.items():
        count = per_outcome.get(value, 0)
        api = getattr(batch, api_field) if api_field else None
        if count or api or name in ("succeeded", "failed"):
            cards.append({"name": name, "label": value.label, "count": count, "api": api,
                          "differs": api is not None and api != count})
    total = sum(per_outcome.values())
    cards.append({"name": "", "label": "total", "count": total, "api": batch.total_requests,
                  "differs": batch.total_requests != total})
    return cards


def error_codes(tally: list[tuple]) -> list[tuple[str, int]]:
    """The batch's request error codes, most frequent first."""
    codes = {}
    for _, code, n in tally:
        if code:
            codes[code] = codes.get(code, 0) + n
    return sorted(codes.items(), key=lambda item: (-item[1], item[0]))


def count_notes(batch: Batch, state: ArchiveState, cards: list[dict]) -> list[str]:
    """Why the index's counts differ from the API's, when they do: each known cause that applies."""
    if not any(card["differs"] for card in cards):
        return []
    counts = {card["name"]: card["count"] for card in cards}
    notes = []
    if state.indexing:
        notes.append(f"The index is still being built ({state.lines:,} lines so far): its counts grow until it is "
                     "done.")
    notes += state.not_archived
    if state.malformed:
        notes.append(f"{state.malformed:,} line{'' if state.malformed == 1 else 's'} of the archived files could not "
                     "be read (not JSON, or without a custom_id) and {} not counted.".format(
                         "is" if state.malformed == 1 else "are"))
    unrun = counts.get("expired", 0) + counts.get("cancelled", 0)
    if unrun:
        words = " and ".join(f"{counts[k]:,} {k}" for k in ("expired", "cancelled") if counts.get(k))
        if counts.get("failed", 0) + unrun == batch.failed_requests:
            notes.append(f"The API counts the requests that never ran ({words}) as failed; the index keeps them "
                         "apart.")
        else:
            notes.append(f"{words.capitalize()} request{'' if unrun == 1 else 's'} never ran (the error file lists "
                         "them): the API counts them in the total, but not as failed.")
    if counts.get("not_run"):
        notes.append(f"{counts['not_run']:,} request{'' if counts['not_run'] == 1 else 's'} of the input file "
                     "have no line in the output or error file.")
    if not notes:
        notes.append("The API's counts are its own; the index counts the lines of the archived files, and no known "
                     "cause explains the difference.")
    return notes


# ----- one request's bodies --------------------------------------------------------------------------------
@dataclass
class Body:
    """One line of an archived file as shown: its JSON pretty (or the text, when it is not JSON), or why not."""

    kind: str  # the file: input, output or error
    problem: str = ""
    expired: bool = False
    text: str = ""  # pretty JSON of `part` (the body), or the line as text
    line_text: str = ""  # pretty JSON of the whole line
    is_json: bool = False
    cut: int = 0  # bytes of the line not read (over BODY_LIMIT)
    value: object = None


def request_bodies(row: BatchRequest, files: dict) -> tuple[Body, Body]:
    """The request's input line and its output or error line, from the archive."""
    request = _body(files, "input", row.input_offset, row.input_length, lambda line: line.get("body"))
    result_kind = "error" if row.result_in_error_file else "output"
    result = _body(files, result_kind, row.result_offset, row.result_length, _result_part)
    return request, result


def _result_part(line: dict):
    response = line.get("response")
    if isinstance(response, dict) and "body" in response:
        return response["body"]
    return line.get("error")


def _body(files: dict, kind: str, offset, length, part) -> Body:
    archived = files.get(kind)
    if offset is None or length is None:
        return Body(kind, problem=f"This request has no line in the {kind} file.")
    if archived is None:
        why = " (ARCHIVE_FILES=results keeps only output and error files)" if (
            kind == "input" and settings.ARCHIVE_FILES == "results") else ""
        return Body(kind, problem=f"The {kind} file is not archived{why}.")
    if archived.state == ArchivedFile.REMOVED:
        return Body(kind, problem="Body expired: the archived copy was removed after ARCHIVE_RETENTION_DAYS; the "
                                  "indexed facts above remain.", expired=True)
    if archived.state != ArchivedFile.STORED:
        return Body(kind, problem=f"The {kind} file is not archived ({archived.get_state_display()}).")
    try:
        data = archive.read_range(archived, offset, min(length, BODY_LIMIT))
    except Exception:  # noqa: BLE001 - a missing object or an unreachable bucket costs this body, not the page
        log.exception("Line at %s of the archived %s file of batch pk %s could not be read", offset, kind,
                      archived.batch_id)
        return Body(kind, problem=f"The {kind} line could not be read from the archive right now.")
    body = Body(kind, cut=max(length - BODY_LIMIT, 0))
    try:
        value = json.loads(data) if not body.cut else None
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        body.is_json, body.value = True, value
        body.line_text = _pretty(value)
        inner = part(value)
        body.text = _pretty(inner) if inner is not None else body.line_text
    else:
        body.text = redact(data.decode("utf-8", errors="replace").rstrip("\n"))
    return body


def _pretty(value) -> str:
    try:
        return redact(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))
    except (ValueError, RecursionError):
        return redact(repr(value))


def conversation(request: Body, result: Body) -> list[dict]:
    """The chat as turns (role and text): the input's messages (chat completions' `messages`, the responses
    API's `input`), then the answer (`choices[].message`, or the `output` messages). Empty when the bodies
    hold no messages."""
    turns = []
    body = request.value.get("body") if isinstance(request.value, dict) else None
    if isinstance(body, dict):
        if isinstance(body.get("instructions"), str):
            turns.append({"role": "instructions", "text": body["instructions"]})
        messages = body.get("messages", body.get("input"))
        if isinstance(messages, str):
            turns.append({"role": "user", "text": messages})
        elif isinstance(messages, list):
            turns += [turn for message in messages if (turn := _turn(message))]
    answer = _result_part(result.value) if isinstance(result.value, dict) else None
    if isinstance(answer, dict):
        for choice in answer.get("choices") or []:
            if isinstance(choice, dict) and (turn := _turn(choice.get("message"), answer=True)):
                turns.append(turn)
        for item in answer.get("output") or []:
            if isinstance(item, dict) and item.get("type", "message") == "message" and (turn := _turn(item, True)):
                turns.append(turn)
    if not any(turn.get("answer") for turn in turns) and not any(turn["role"] != "instructions" for turn in turns):
        return []
    if len(turns) > MESSAGES_SHOWN:
        turns = turns[:MESSAGES_SHOWN] + [{"role": "…", "text": f"{len(turns) - MESSAGES_SHOWN:,} more messages"}]
    return turns


def _turn(message, answer: bool = False) -> dict | None:
    if not isinstance(message, dict) or ("content" not in message and "tool_calls" not in message):
        return None
    parts = [_text(message.get("content"))]
    if isinstance(message.get("refusal"), str):
        parts.append(f"[refused] {message['refusal']}")
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(f"[calls {function.get('name')}({function.get('arguments', '')})]")
    text = "\n".join(part for part in parts if part)
    return {"role": str(message.get("role") or "assistant")[:40], "text": shown(text, MESSAGE_LIMIT),
            "answer": answer}


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return "" if content is None else json.dumps(content, ensure_ascii=False)[:MESSAGE_LIMIT]
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("refusal"), str):
                texts.append(f"[refused] {part['refusal']}")
            else:
                texts.append(f"[{str(part.get('type') or 'part')[:40]}]")
    return "\n".join(texts)


# ----- exports ---------------------------------------------------------------------------------------------
CSV_COLUMNS = ("custom_id", "outcome", "status_code", "error_code", "model", "input_tokens", "output_tokens",
               "total_tokens", "preview")


def csv_chunks(rows, *, content: bool):
    """The indexed columns of `rows` as CSV (the preview only with `content`), read in chunks. A cell a
    spreadsheet would run as a formula starts with a quote."""
    columns = CSV_COLUMNS if content else CSV_COLUMNS[:-1]
    writer = csv.writer(CsvLine())
    yield writer.writerow(columns)
    for values in rows.values_list(*columns).iterator(chunk_size=2000):
        values = list(values)
        values[1] = OUTCOME_NAMES.get(values[1], values[1])
        yield writer.writerow([csv_cell(value) for value in values])


def jsonl_problem(rows, files: dict) -> tuple[str, int] | None:
    """Why the result lines of `rows` cannot be exported (and the status to answer with), or None."""
    for kind in ("output", "error"):
        if not rows.filter(result_in_error_file=kind == "error", result_offset__isnull=False).exists():
            continue
        archived = files.get(kind)
        if archived is not None and archived.state == ArchivedFile.REMOVED:
            return (f"The archived {kind} file was removed after ARCHIVE_RETENTION_DAYS: its lines are no longer "
                    "kept. The CSV export still has the indexed columns.", 410)
        if archived is None or archived.state != ArchivedFile.STORED:
            return f"The {kind} file is not archived, so its lines cannot be exported.", 404
    return None


def jsonl_chunks(rows, files: dict, *, chunk_bytes: int = 1 << 16):
    """The original output and error lines of `rows`, in the order of the files (the output file's, then the
    error file's): one pass over each archived file, from the first line wanted to the last."""
    pending, size = [], 0
    for kind in ("output", "error"):
        spans = (rows.filter(result_in_error_file=kind == "error", result_offset__isnull=False,
                             result_length__isnull=False)
                 .order_by("result_offset").values_list("result_offset", "result_length").iterator(chunk_size=2000))
        first = next(spans, None)
        if first is None:
            continue
        chunks = archive.stream(files[kind], start=first[0])
        for piece in _cut(chunks, first[0], _chain(first, spans)):
            pending.append(piece)
            size += len(piece)
            if size >= chunk_bytes:
                yield b"".join(pending)
                pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _chain(first, rest):
    yield first
    yield from rest


def _cut(chunks, start: int, spans):
    """The bytes of each (offset, length) span, in order, out of `chunks` (a file read from `start` on), each
    span ending with a newline."""
    chunks = iter(chunks)
    chunk, pos, at = b"", 0, start  # `at` is the file offset of chunk[pos]
    for offset, length in spans:
        end, last = offset + length, b""
        while at < end:
            if pos == len(chunk):
                chunk, pos = next(chunks, b""), 0
                if not chunk:
                    return  # the copy is shorter than the index says
            step = min((offset if at < offset else end) - at, len(chunk) - pos)
            if at >= offset:
                last = chunk[pos + step - 1:pos + step]
                yield chunk[pos:pos + step]
            pos, at = pos + step, at + step
        if last and last != b"\n":
            yield b"\n"


class Export(actions.AuditedStream):
    """An export of the explorer's rows, audited as a download of `detail` when its response ends."""

    def __init__(self, chunks, *, batch: Batch, user, detail: str, description: str):
        super().__init__(chunks, batch=batch, user=user, detail=detail, label=description)

    def why_cut(self, exc: Exception) -> str:
        log.exception("The export %s of batch pk %s broke", self.detail, self.batch.pk)
        return super().why_cut(exc)


