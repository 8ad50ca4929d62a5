"""The simulated OpenAI Batch + Files API, without HTTP: state, the state machine, file contents.

Time is lazy: nothing runs in the background. Every batch carries a plan (how long each phase
lasts, whether and when it is cancelled), and each read steps it through the events whose time has
come. The clock is real wall-clock time plus an offset that tests can move, so timestamps stay real
while `speed` shortens every duration.

Per-request outcomes are pure functions of (batch seed, processing index), so counts, usage and the
output/error files always agree, and a 200 MB file costs nothing until it is streamed.
"""

import bisect
import json
import random
import threading
import time
from dataclasses import dataclass, field

ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")
CANCELLABLE = ("validating", "in_progress", "finalizing")
WINDOW_SECONDS = 24 * 3600
MAX_LINES = 50_000
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
CREATIONS_PER_HOUR = 2000  # POST /v1/batches per hour (CONTRACT §2)
DEFAULT_OUTPUT_EXPIRY = 30 * 24 * 3600
_MODELS = {
    "/v1/chat/completions": ["gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini", "o3-mini"],
    "/v1/responses": ["gpt-5", "gpt-4.1", "gpt-5-mini"],
    "/v1/embeddings": ["text-embedding-3-small", "text-embedding-3-large"],
    "/v1/completions": ["gpt-3.5-turbo-instruct"],
    "/v1/moderations": ["omni-moderation-latest"],
}
_DESCRIPTIONS = [
    "nightly eval run",
    "support ticket triage",
    "product catalogue embeddings",
    "search relevance labels",
    "weekly summarisation",
    "translation backfill",
    "classifier distillation",
    "moderation sweep",
]
_VALIDATION_ERRORS = [
    ("invalid_json_line", "This line is not parseable as valid JSON."),
    ("duplicate_custom_id", "The custom_id for this request is a duplicate of another request."),
    ("url_mismatch", "The url provided for this request does not match the batch endpoint."),
    ("model_mismatch", "All requests in a batch must use the same model."),
]
_REQUEST_FAILURES = [
    (400, "invalid_request_error", "context_length_exceeded",
     "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens."),
    (400, "invalid_request_error", "invalid_prompt",
     "Invalid prompt: your prompt was flagged as potentially violating our usage policy."),
    (500, "server_error", "server_error", "The server had an error while processing your request. Sorry about that!"),
]


class ApiError(Exception):
    """An error answer: HTTP status plus the standard envelope's fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def envelope(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


_M64 = 0xFFFFFFFFFFFFFFFF


def _mix(*values: int) -> int:
    """splitmix64 over the values: a fast, deterministic hash."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x


class Clock:
    """Wall-clock seconds plus an offset that tests move with advance(); optionally frozen."""

    def __init__(self, start: float | None = None, frozen: bool = False):
        self._base = start if start is not None else time.time()
        self._frozen = frozen
        self._real_start = time.time()
        self.offset = 0.0

    def now(self) -> float:
        base = self._base if self._frozen else self._base + (time.time() - self._real_start)
        return base + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    created_at: float
    expires_at: float | None = None
    data: bytes | None = None
    generator: object = None  # callable yielding bytes, for lazily generated files
    deleted: bool = False
    _size: int | None = None

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = len(self.data) if self.data is not None else sum(len(c) for c in self.generator())
        return self._size

    def chunks(self):
        if self.data is not None:
            for start in range(0, len(self.data), 1 << 16):
                yield self.data[start:start + (1 << 16)]
        else:
            yield from self.generator()

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": int(self.created_at),
            "expires_at": int(self.expires_at) if self.expires_at is not None else None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class SimBatch:
    id: str
    seq: int
    endpoint: str
    model: str | None
    input_file_id: str
    created_at: float
    expires_at: float
    metadata: dict | None
    output_expiry: int
    seed: int
    lines: int  # requests in the input (known to us at once; shown only after validation)
    fail_share: float
    content_chars: int
    d_validate: float
    d_process: float
    d_finalize: float
    d_cancel: float
    cancel_at: float | None = None
    forced_errors: list | None = None
    custom_ids: list | None = None  # from an uploaded input file; synthetic ids otherwise
    not_run: int = 0  # the last requests in processing order get no output line and no error line
    malformed: int = 0  # unreadable lines mixed into the output file (the error file when there is none)
    status: str = "validating"
    stamps: dict = field(default_factory=dict)
    total: int = 0
    processed: int = 0
    errors: list | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    # running sums over processing indexes [0, _cursor): completed, failed, input, cached, output, reasoning
    _cursor: int = 0
    _sums: list = field(default_factory=lambda: [0, 0, 0, 0, 0, 0])

    def ran(self, k: int) -> int:
        """How many of the first k processed requests have a line in the output or error file."""
        return max(0, min(k, self.total - self.not_run))

    def custom_id(self, index: int) -> str:
        return self.custom_ids[index] if self.custom_ids is not None else f"request-{index + 1}"

    def input_index(self, k: int) -> int:
        """The input line processed k-th: a fixed permutation, so result order differs from input order."""
        n = self.lines
        if n <= 1:
            return 0
        for step in (104729, 1299709, 15485863):
            if n % step:
                return (k * step + self.seed) % n
        return k

    def outcome(self, k: int) -> tuple:
        """(failed, input, cached, output, reasoning, failure kind) of the k-th processed request."""
        h = (self.seed + (k + 1) * 0x9E3779B97F4A7C15) & _M64  # one splitmix64 step: this is the hot loop
        h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _M64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _M64
        h ^= h >> 31
        failed = (h & 0xFFFF) < self.fail_share * 65536
        if failed:
            return True, 0, 0, 0, 0, (h >> 16) % len(_REQUEST_FAILURES)
        inp = 40 + (h >> 16) % 900
        cached = (inp // 2) if (h >> 26) % 4 == 0 else 0
        out = 0 if self.endpoint in ("/v1/embeddings", "/v1/moderations") else 10 + (h >> 30) % 600
        reasoning = out // 3 if (self.model or "").startswith(("o", "gpt-5")) else 0
        return False, inp, cached, out, reasoning, None

    def sums_at(self, k: int) -> list:
        """Counts and usage after k processed requests; amortised O(1) since k only grows.

        The loop repeats outcome() inline: it runs for every request of every batch."""
        if k < self._cursor:  # not expected (processing only moves forward); recompute from scratch
            self._cursor, self._sums = 0, [0, 0, 0, 0, 0, 0]
        completed, failed, inp, cached, out, reasoning = self._sums
        seed, threshold = self.seed, self.fail_share * 65536
        has_output = self.endpoint not in ("/v1/embeddings", "/v1/moderations")
        reasons = (self.model or "").startswith(("o", "gpt-5"))
        for j in range(self._cursor, k):
            h = (seed + (j + 1) * 0x9E3779B97F4A7C15) & _M64
            h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _M64
            h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _M64
            h ^= h >> 31
            if (h & 0xFFFF) < threshold:
                failed += 1
                continue
            completed += 1
            i = 40 + (h >> 16) % 900
            inp += i
            if (h >> 26) % 4 == 0:
                cached += i // 2
            if has_output:
                o = 10 + (h >> 30) % 600
                out += o
                if reasons:
                    reasoning += o // 3
        self._cursor, self._sums = k, [completed, failed, inp, cached, out, reasoning]
        return self._sums


class Simulator:
    """All state of one simulated API account. Thread-safe: every public method holds the lock."""

    def __init__(
        self,
        *,
        seed: int = 1,
        speed: float = 1.0,
        clock: Clock | None = None,
        failure_share: float = 0.03,
        queued_token_limit: int | None = None,
        arrival_interval: float = 0.0,
    ):
        self.lock = threading.RLock()
        self.seed = seed
        self.speed = max(float(speed), 1e-6)
        self.clock = clock or Clock()
        self.failure_share = failure_share
        self.queued_token_limit = queued_token_limit
        self.arrival_interval = arrival_interval
        self._rng = random.Random(seed)
        self._counter = 0
        self.batches: dict[str, SimBatch] = {}
        self.files: dict[str, SimFile] = {}
        self._keys: list[tuple] = []  # (created_at, seq, id), ascending
        self._next_arrival = self.clock.now() + arrival_interval if arrival_interval > 0 else None
        self.created_times: list[float] = []  # when each POST /v1/batches created one: counted, and rate-limited
        self.creations_per_hour = CREATIONS_PER_HOUR
        # Called (under the lock: it must not block) with (batch id, status, at) when a batch becomes terminal.
        self.on_terminal = None

    # ----- ids and durations -------------------------------------------------------------------
    def _id(self, prefix: str, length: int = 24) -> str:
        self._counter += 1
        digest = f"{_mix(self.seed, self._counter):016x}{_mix(self._counter, self.seed):016x}"
        return prefix + digest[:length]

    def _durations(self, rng: random.Random, lines: int) -> dict:
        s = self.speed
        return {
            "d_validate": rng.uniform(20, 120) / s,
            "d_process": (1800 + lines * 8.0) * rng.uniform(0.5, 1.8) / s,
            "d_finalize": rng.uniform(30, 180) / s,
            "d_cancel": rng.uniform(30, 300) / s,
        }

    # ----- files -------------------------------------------------------------------------------
    def _add_file(self, **kwargs) -> SimFile:
        f = SimFile(id=self._id("file-", 22), **kwargs)
        self.files[f.id] = f
        return f

    def _live_file(self, file_id: str) -> SimFile:
        f = self.files.get(file_id)
        if f is None or f.deleted or (f.expires_at is not None and f.expires_at <= self.clock.now()):
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return f

    def upload_file(self, *, filename: str, purpose: str, data: bytes, expires_after: dict | None = None) -> dict:
        with self.lock:
            if purpose not in UPLOAD_PURPOSES:
                raise ApiError(400, f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'", param="purpose")
            if purpose == "batch":
                if not filename.endswith(".jsonl"):
                    raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
                if len(data) > MAX_BATCH_FILE_BYTES:
                    raise ApiError(400, "File is too large for the Batch API (maximum 200 MB).", param="file")
            now = self.clock.now()
            expires_at = now + DEFAULT_OUTPUT_EXPIRY if purpose == "batch" else None
            if expires_after is not None:
                expires_at = now + _check_expiry(expires_after, "expires_after")
            return self._add_file(filename=filename, purpose=purpose, created_at=now, expires_at=expires_at,
                                  data=data).to_json()

    def list_files(self, *, purpose: str | None = None, limit: int = 10000, order: str = "desc",
                   after: str | None = None) -> dict:
        with self.lock:
            if not 1 <= limit <= 10000:
                raise ApiError(400, "limit must be between 1 and 10000", param="limit")
            if order not in ("asc", "desc"):
                raise ApiError(400, "order must be 'asc' or 'desc'", param="order")
            now = self.clock.now()
            files = [
                f for f in self.files.values()
                if not f.deleted and (f.expires_at is None or f.expires_at > now)
                and (purpose is None or f.purpose == purpose)
            ]
            files.sort(key=lambda f: (f.created_at, f.id), reverse=order == "desc")
            if after:
                ids = [f.id for f in files]
                if after not in ids:
                    raise ApiError(400, f"No file found with id '{after}'", param="after")
                files = files[ids.index(after) + 1:]
            page = files[:limit]
            return {
                "object": "list",
                "data": [f.to_json() for f in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(files) > limit,
            }

    def retrieve_file(self, file_id: str) -> dict:
        with self.lock:
            return self._live_file(file_id).to_json()

    def delete_file(self, file_id: str) -> dict:
        with self.lock:
            self._live_file(file_id).deleted = True
            return {"id": file_id, "object": "file", "deleted": True}

    def file_for_download(self, file_id: str) -> SimFile:
        with self.lock:
            f = self._live_file(file_id)
            f.size  # noqa: B018 - computed now, under the lock, so streaming needs no lock
            return f

    # ----- batches -----------------------------------------------------------------------------
    def create_batch(self, body) -> dict:
        with self.lock:
            if not isinstance(body, dict):
                raise ApiError(400, "The request body must be a JSON object.")
            for name in ("input_file_id", "endpoint", "completion_window"):
                if not isinstance(body.get(name), str) or not body[name]:
                    raise ApiError(400, f"Missing required parameter: '{name}'.", param=name)
            if body["endpoint"] not in ENDPOINTS:
                raise ApiError(400, f"Invalid value: '{body['endpoint']}'. Supported values are: {list(ENDPOINTS)}",
                               param="endpoint", code="invalid_value")
            if body["completion_window"] != "24h":
                raise ApiError(400, "Invalid value for 'completion_window': only '24h' is supported.",
                               param="completion_window", code="invalid_value")
            metadata = _check_metadata(body.get("metadata"))
            output_expiry = DEFAULT_OUTPUT_EXPIRY
            if body.get("output_expires_after") is not None:
                output_expiry = _check_expiry(body["output_expires_after"], "output_expires_after")
            f = self._live_file(body["input_file_id"])
            if f.purpose != "batch":
                raise ApiError(400, f"File {f.id} must be uploaded with purpose 'batch'.", param="input_file_id")
            now = self.clock.now()
            if sum(1 for at in self.created_times if at > now - 3600) >= self.creations_per_hour:
                raise ApiError(429, f"Rate limit reached: at most {self.creations_per_hour} batches can be created "
                               "per hour.", type="requests", code="rate_limit_exceeded")
            self.created_times.append(now)
            rng = random.Random(_mix(self.seed, self._counter, 7))
            b = self._new_batch(endpoint=body["endpoint"], model=None, input_file=f, created_at=self.clock.now(),
                                metadata=metadata, output_expiry=output_expiry, lines=0, rng=rng,
                                fail_share=self.failure_share)
            return self._json(b)

    def list_batches(self, *, after: str | None = None, limit: int = 20) -> dict:
        with self.lock:
            self._spawn_arrivals()
            if not 1 <= limit <= 100:
                raise ApiError(400, "Invalid 'limit': integer below minimum value or above maximum value (1..100).",
                               param="limit", code="integer_out_of_range")
            end = len(self._keys)
            if after:
                b = self.batches.get(after)
                if b is None:
                    raise ApiError(400, f"No batch found with id '{after}' for parameter 'after'.", param="after")
                end = bisect.bisect_left(self._keys, (b.created_at, b.seq, b.id))
            start = max(0, end - limit)
            page = [self.batches[key[2]] for key in reversed(self._keys[start:end])]
            data = [self._json(b) for b in page]
            return {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": start > 0,
            }

    def retrieve_batch(self, batch_id: str) -> dict:
        with self.lock:
            self._spawn_arrivals()
            return self._json(self._batch(batch_id))

    def cancel_batch(self, batch_id: str) -> dict:
        with self.lock:
            b = self._batch(batch_id)
            now = self.clock.now()
            self._step(b, now)
            if b.status in TERMINAL:
                raise ApiError(400, f"Cannot cancel a batch with status '{b.status}'.", code="batch_not_cancellable")
            if b.status in CANCELLABLE:
                b.cancel_at = now
                self._step(b, now)
            return self._json(b)

    def truth(self) -> list[dict]:
        """Every batch as the API would show it now, oldest first."""
        with self.lock:
            self._spawn_arrivals()
            return [self._json(self.batches[key[2]]) for key in self._keys]

    def _batch(self, batch_id: str) -> SimBatch:
        b = self.batches.get(batch_id)
        if b is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")
        return b

    def _new_batch(self, *, endpoint, model, input_file, created_at, metadata, output_expiry, lines, rng,
                   fail_share, content_chars=0, window=None) -> SimBatch:
        b = SimBatch(
            id=self._id("batch_"),
            seq=self._counter,
            endpoint=endpoint,
            model=model,
            input_file_id=input_file.id,
            created_at=created_at,
            expires_at=created_at + (window if window is not None else WINDOW_SECONDS / self.speed),
            metadata=metadata,
            output_expiry=output_expiry,
            seed=rng.getrandbits(48),
            lines=lines,
            fail_share=fail_share,
            content_chars=content_chars,
            **self._durations(rng, lines),
        )
        b.stamps["created_at"] = created_at
        b._input_file = input_file
        self.batches[b.id] = b
        bisect.insort(self._keys, (b.created_at, b.seq, b.id))
        return b

    # ----- the state machine -------------------------------------------------------------------
    def _step(self, b: SimBatch, now: float) -> None:
        """Apply, in time order, every event of b's plan that is due by `now`."""
        while b.status in ACTIVE:
            events = []
            if b.status == "validating":
                events.append((b.created_at + b.d_validate, 0, "validated"))
            elif b.status == "in_progress":
                events.append((b.stamps["in_progress_at"] + b.d_process, 0, "processed"))
                events.append((b.expires_at, 1, "expire"))
            elif b.status == "finalizing":
                events.append((b.stamps["finalizing_at"] + b.d_finalize, 0, "finalized"))
            elif b.status == "cancelling":
                events.append((b.stamps["cancelling_at"] + b.d_cancel, 0, "cancelled"))
            if b.cancel_at is not None and b.status in CANCELLABLE:
                events.append((max(b.cancel_at, b.created_at), -1, "cancel"))
            at, _, event = min(events)
            if at > now:
                return
            self._apply(b, event, at)

    def _apply(self, b: SimBatch, event: str, at: float) -> None:
        if event == "validated":
            errors = self._validate(b)
            if errors:
                b.status, b.errors = "failed", {"object": "list", "data": errors}
                b.stamps["failed_at"] = at
            else:
                b.status, b.total = "in_progress", b.lines
                b.stamps["in_progress_at"] = at
        elif event == "processed":
            b.status, b.processed = "finalizing", b.total
            b.stamps["finalizing_at"] = at
        elif event == "finalized":
            b.status = "completed"
            b.stamps["completed_at"] = at
            self._publish(b, at, unrun_code=None)
        elif event == "expire":
            b.processed = self._processed_at(b, at)
            b.status = "expired"
            b.stamps["expired_at"] = at
            self._publish(b, at, unrun_code="batch_expired")
        elif event == "cancel":
            b.processed = self._processed_at(b, at)
            b.status = "cancelling"
            b.stamps["cancelling_at"] = at
        elif event == "cancelled":
            b.status = "cancelled"
            b.stamps["cancelled_at"] = at
            self._publish(b, at, unrun_code="batch_cancelled")
        if b.status in TERMINAL and self.on_terminal is not None:
            self.on_terminal(b.id, b.status, at)

    def _processed_at(self, b: SimBatch, at: float) -> int:
        if b.status == "validating":
            return 0
        if b.status in ("finalizing", "completed"):
            return b.total
        if b.status == "in_progress":
            if b.d_process <= 0:
                return b.total
            share = min(1.0, max(0.0, (at - b.stamps["in_progress_at"]) / b.d_process))
            return int(b.total * share)
        return b.processed

    def _validate(self, b: SimBatch) -> list | None:
        if b.forced_errors is not None:
            return b.forced_errors
        if b.model is not None:  # synthetic input: valid by construction
            return self._check_token_limit(b, b.lines * 300)
        errors, ids, models, tokens = [], [], set(), 0
        seen = set()
        numbered = [
            (number, text)
            for number, text in enumerate((b._input_file.data or b"").decode("utf-8", errors="replace").splitlines(), 1)
            if text.strip()  # blank lines (a trailing newline, say) are not requests
        ]
        if not numbered:
            return [{"code": "empty_file", "message": "The batch input file is empty.", "param": None, "line": None}]
        if len(numbered) > MAX_LINES:
            return [{"code": "too_many_tasks", "message": f"The batch input file has {len(numbered)} requests, "
                     f"above the limit of {MAX_LINES}.", "param": None, "line": None}]
        for number, text in numbered:
            try:
                item = json.loads(text)
                if not isinstance(item, dict):
                    raise ValueError
            except ValueError:
                errors.append(_line_error("invalid_json_line", "This line is not parseable as valid JSON.", number))
                continue
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                errors.append(_line_error("missing_custom_id", "Each request needs a string custom_id.", number,
                                          "custom_id"))
            elif custom_id in seen:
                errors.append(_line_error("duplicate_custom_id", "The custom_id for this request is a duplicate "
                                          "of another request. The custom_id parameter must be unique for each "
                                          "request in a batch.", number, "custom_id"))
            seen.add(custom_id)
            ids.append(str(custom_id))
            if item.get("method") != "POST":
                errors.append(_line_error("invalid_method", "The method for each request must be POST.", number,
                                          "method"))
            if item.get("url") != b.endpoint:
                errors.append(_line_error("url_mismatch", "The provided URL does not match the batch endpoint "
                                          f"{b.endpoint}.", number, "url"))
            body = item.get("body")
            if not isinstance(body, dict):
                errors.append(_line_error("invalid_request", "Each request needs a JSON object body.", number,
                                          "body"))
                continue
            if body.get("stream") is True:
                errors.append(_line_error("invalid_request", "Streaming is not supported in batches.", number,
                                          "body.stream"))
            model = body.get("model")
            if isinstance(model, str):
                if models and model not in models:
                    errors.append(_line_error("model_mismatch", "All requests in a batch must use the same model; "
                                              f"this one uses {model}.", number, "body.model"))
                models.add(model)
            tokens += len(json.dumps(body)) // 4
        if errors:
            return errors[:1000]
        b.custom_ids, b.lines = ids, len(ids)
        b.model = next(iter(models), None)
        return self._check_token_limit(b, tokens)

    def _check_token_limit(self, b: SimBatch, tokens: int) -> list | None:
        if self.queued_token_limit is None:
            return None
        queued = sum(
            other.lines * 300 for other in self.batches.values()
            if other is not b and other.model == b.model and other.status in ("in_progress", "finalizing")
        )
        if queued + tokens <= self.queued_token_limit:
            return None
        return [{
            "code": "token_limit_exceeded",
            "message": f"Enqueued token limit reached for {b.model} in organization org-simulator. "
                       f"Limit: {self.queued_token_limit:,} enqueued tokens. Please try again once some "
                       "in_progress batches have been completed.",
            "param": None,
            "line": None,
        }]

    def _publish(self, b: SimBatch, at: float, unrun_code: str | None) -> None:
        """Create the output and error files of a batch that just became terminal."""
        sums = b.sums_at(b.ran(b.processed))
        unrun = max(0, b.total - b.not_run - b.processed) if unrun_code else 0
        expires = at + b.output_expiry
        broken_in_output = bool(sums[0])  # malformed lines go to the output file, or the error file without one
        if sums[0]:
            b.output_file_id = self._add_file(
                filename=f"{b.id}_output.jsonl", purpose="batch_output", created_at=at, expires_at=expires,
                generator=lambda: _result_lines(b, errors=False, unrun_code=None, lines=sums[0],
                                                malformed=b.malformed),
            ).id
        if sums[1] or unrun or (b.malformed and not broken_in_output):
            b.error_file_id = self._add_file(
                filename=f"{b.id}_error.jsonl", purpose="batch_output", created_at=at, expires_at=expires,
                generator=lambda: _result_lines(b, errors=True, unrun_code=unrun_code, lines=sums[1] + unrun,
                                                malformed=0 if broken_in_output else b.malformed),
            ).id

    def _json(self, b: SimBatch) -> dict:
        now = self.clock.now()
        self._step(b, now)
        processed = self._processed_at(b, now)
        sums = b.sums_at(b.ran(processed))
        stamp = b.stamps.get
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": b.model,
            "errors": b.errors,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            **{name: (int(stamp(name)) if stamp(name) is not None else None) for name in (
                "created_at", "in_progress_at")},
            "expires_at": int(b.expires_at),
            **{name: (int(stamp(name)) if stamp(name) is not None else None) for name in (
                "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at")},
            "request_counts": {"total": b.total, "completed": sums[0], "failed": sums[1]},
            "usage": {
                "input_tokens": sums[2],
                "input_tokens_details": {"cached_tokens": sums[3]},
                "output_tokens": sums[4],
                "output_tokens_details": {"reasoning_tokens": sums[5]},
                "total_tokens": sums[2] + sums[4],
            },
            "metadata": b.metadata,
        }

    # ----- synthetic batches (pre-created, injected, arrivals) ---------------------------------
    def populate(self, *, historical: int = 0, active: int = 0) -> None:
        """Pre-create terminal batches of realistic ages, and batches caught mid-flight."""
        with self.lock:
            rng = random.Random(_mix(self.seed, 2024))
            now = self.clock.now()
            targets = ["completed"] * 14 + ["failed"] * 2 + ["expired"] * 1 + ["cancelled"] * 2 + ["all_failed"]
            for _ in range(historical):
                age = min(30 * 86400, 3600 * 2 ** rng.uniform(0, 9.5))
                self.add_synthetic(rng.choice(targets), created_at=now - age, rng=rng)
            states = ["in_progress", "in_progress", "in_progress", "validating", "finalizing", "cancelling"]
            for i in range(active):
                self.add_synthetic(states[i % len(states)], rng=rng)

    def add_synthetic(self, target: str, *, created_at: float | None = None, lines: int | None = None,
                      fail_share: float | None = None, output_bytes: int | None = None, endpoint: str | None = None,
                      model: str | None = None, metadata: dict | None = None, processing_seconds: float | None = None,
                      not_run: int = 0, malformed: int = 0, output_expires_after=None,
                      rng: random.Random | None = None) -> dict:
        """A batch with generated input, planned so that it is in `target` now (or at `created_at` + plan).

        `not_run` requests get no line in either result file; `malformed` unreadable lines join the output file
        (or the error file); `output_expires_after` (seconds, or the API's {"anchor", "seconds"}) is how long
        the result files live after the batch finishes (404 afterwards)."""
        with self.lock:
            rng = rng or random.Random(_mix(self.seed, self._counter, 99))
            now = self.clock.now()
            if output_bytes and not endpoint:
                endpoint = "/v1/chat/completions"  # a text answer can be padded to size
            endpoint = endpoint or rng.choice(["/v1/chat/completions"] * 3 + ["/v1/responses", "/v1/embeddings"])
            if endpoint not in ENDPOINTS:
                raise ApiError(400, f"Unknown endpoint {endpoint!r}", param="endpoint")
            model = model or rng.choice(_MODELS.get(endpoint, ["gpt-4o-mini"]))
            lines = lines if lines is not None else int(2 ** rng.uniform(3, 10.5))
            if not 0 <= lines <= MAX_LINES:
                raise ApiError(400, f"lines must be 0..{MAX_LINES}", param="lines")
            not_run = _check_count(not_run, "not_run", lines)
            malformed = _check_count(malformed, "malformed", MAX_LINES)
            output_expiry = DEFAULT_OUTPUT_EXPIRY
            if isinstance(output_expires_after, dict):
                output_expiry = _check_expiry(output_expires_after, "output_expires_after")
            elif output_expires_after is not None:
                output_expiry = _check_count(output_expires_after, "output_expires_after", DEFAULT_OUTPUT_EXPIRY)
            if fail_share is None:
                fail_share = 1.0 if target == "all_failed" else self.failure_share * rng.uniform(0, 3)
            content_chars = 0
            if metadata is None:
                metadata = {"description": f"{rng.choice(_DESCRIPTIONS)} #{rng.randint(1, 999)}",
                            "team": rng.choice(["search", "support", "research", "growth"])}
            else:
                metadata = _check_metadata(metadata)
            status = "completed" if target == "all_failed" else target
            if status not in ACTIVE + TERMINAL:
                raise ApiError(400, f"Unknown status {target!r}", param="status")
            file_created = (created_at if created_at is not None else now) - 30
            input_file = self._add_file(filename=f"input-{self._counter}.jsonl", purpose="batch",
                                        created_at=file_created, expires_at=file_created + DEFAULT_OUTPUT_EXPIRY,
                                        generator=None)
            b = self._new_batch(endpoint=endpoint, model=model, input_file=input_file,
                                created_at=created_at if created_at is not None else now, metadata=metadata,
                                output_expiry=output_expiry, lines=lines, rng=rng, fail_share=fail_share,
                                content_chars=content_chars)
            b.not_run, b.malformed = not_run, malformed
            input_file.generator = lambda: _input_lines(b)
            if output_bytes:  # pad each answer so the output file reaches the asked size
                per_line = output_bytes / max(lines, 1) / max(1e-9, 1 - b.fail_share)
                b.content_chars = max(0, int(per_line - _success_line_size(b)))
            if processing_seconds is not None:
                b.d_process = max(float(processing_seconds), 0.0)
            self._plan(b, status, now, rng, fixed_start=created_at is not None, explicit=processing_seconds is not None)
            self._step(b, now)
            return self._json(b)

    def _plan(self, b: SimBatch, status: str, now: float, rng: random.Random, fixed_start: bool,
              explicit: bool = False) -> None:
        """Shape b's plan so that it is in `status` now: move its creation time back, or, when the
        creation time is fixed, stretch or squeeze every duration to fit the time since then."""
        u = rng.uniform(0.1, 0.9)
        if status == "failed":
            code, message = rng.choice(_VALIDATION_ERRORS)
            b.forced_errors = [_line_error(code, message, rng.randint(1, max(b.lines, 1)))]
        window = b.expires_at - b.created_at
        dv, dp, df, dc = b.d_validate, b.d_process, b.d_finalize, b.d_cancel
        if status != "expired" and not explicit and dv + dp + df > 0.9 * window:  # finishing must fit the window
            fit = 0.9 * window / (dv + dp + df)
            dv, dp, df = dv * fit, dp * fit, df * fit
        cancel = dv + u * dp
        phases = {
            "validating": (0, dv),
            "in_progress": (dv, dv + dp),
            "finalizing": (dv + dp, dv + dp + df),
            "cancelling": (cancel, cancel + dc),
            "completed": (dv + dp + df, None),
            "failed": (dv, None),
            "expired": (window, None),
            "cancelled": (cancel + dc, None),
        }
        entry, leave = phases[status]
        target = entry + u * (leave - entry) if leave is not None else entry + 1
        if status in ACTIVE:  # caught mid-flight means still inside the completion window
            target = min(target, window * 0.95)
        scale = 1.0
        if fixed_start:
            span = max(now - b.created_at, 0.0)
            if leave is not None or span < target:
                scale = span / target if target > 0 else 0.0
        else:
            self._set_created(b, now - target)
        b.d_validate, b.d_process, b.d_finalize, b.d_cancel = dv * scale, dp * scale, df * scale, dc * scale
        b.expires_at = b.created_at + window * scale
        if status in ("cancelling", "cancelled"):
            b.cancel_at = b.created_at + cancel * scale
        if status == "expired":  # processing must outlast the window
            b.d_process = max(b.d_process, window * scale * 3 + 1e-3)

    def _set_created(self, b: SimBatch, created_at: float) -> None:
        self._keys.remove((b.created_at, b.seq, b.id))
        b.expires_at += created_at - b.created_at
        b.created_at = b.stamps["created_at"] = created_at
        bisect.insort(self._keys, (b.created_at, b.seq, b.id))

    def _spawn_arrivals(self) -> None:
        """Demo mode: a new batch arrives every `arrival_interval` seconds."""
        if self._next_arrival is None:
            return
        now = self.clock.now()
        while self._next_arrival <= now:
            at = self._next_arrival
            self._next_arrival += self.arrival_interval
            rng = random.Random(_mix(self.seed, int(at)))
            self.add_synthetic("validating", created_at=at, rng=rng)

    # ----- control -----------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        with self.lock:
            self.clock.advance(seconds)

    def step_all(self) -> None:
        """Apply every event due by now to every running batch, as if each were read (webhooks need the
        transitions to happen without a read)."""
        with self.lock:
            now = self.clock.now()
            for b in list(self.batches.values()):
                if b.status in ACTIVE:
                    self._step(b, now)

    def forget_batch(self, batch_id: str) -> None:
        """The API loses a batch (a compatible server that deletes them, say): 404 from now on."""
        with self.lock:
            b = self.batches.pop(batch_id)
            self._keys.remove((b.created_at, b.seq, b.id))


def _line_error(code: str, message: str, line: int | None, param: str | None = None) -> dict:
    return {"code": code, "message": message, "param": param, "line": line}


def _check_metadata(metadata):
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ApiError(400, "metadata must be an object of string keys and string values.", param="metadata")
    if len(metadata) > 16:
        raise ApiError(400, "metadata can have at most 16 key-value pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise ApiError(400, f"metadata key {key[:20]!r}... is longer than 64 characters.", param="metadata")
        if not isinstance(value, str) or len(value) > 512:
            raise ApiError(400, f"metadata value for {key!r} must be a string of at most 512 characters.",
                           param="metadata")
    return dict(metadata)


def _check_count(value, param: str, top: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise ApiError(400, f"{param} must be an integer between 0 and {top}.", param=param)
    return value


def _check_expiry(value, param: str) -> int:
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise ApiError(400, f"{param}.anchor must be 'created_at'.", param=f"{param}.anchor")
    seconds = value.get("seconds")
    if isinstance(seconds, str) and seconds.isdigit():
        seconds = int(seconds)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 3600 <= seconds <= 2592000:
        raise ApiError(400, f"{param}.seconds must be an integer between 3600 and 2592000.",
                       param=f"{param}.seconds")
    return seconds


def _input_body(b: SimBatch, index: int) -> dict:
    text = f"Request {index + 1}: summarise item {index + 1} in one sentence."
    if b.endpoint in ("/v1/embeddings", "/v1/responses", "/v1/moderations"):
        return {"model": b.model, "input": text}
    if b.endpoint == "/v1/completions":
        return {"model": b.model, "prompt": text, "max_tokens": 200}
    return {"model": b.model, "messages": [{"role": "user", "content": text}], "max_tokens": 200}


def _input_lines(b: SimBatch):
    buf = []
    for i in range(b.lines):
        buf.append(json.dumps({"custom_id": b.custom_id(i), "method": "POST", "url": b.endpoint,
                               "body": _input_body(b, i)}) + "\n")
        if len(buf) >= 256:
            yield "".join(buf).encode()
            buf = []
    if buf:
        yield "".join(buf).encode()


def _success_body(b: SimBatch, k: int, created: int, inp: int, cached: int, out: int, reasoning: int) -> dict:
    rid = f"{_mix(b.seed, k, 3):016x}"
    text = "Here is a concise answer for this request." + (" lorem ipsum" * (b.content_chars // 12))
    if b.endpoint == "/v1/embeddings":
        vector = [round(((_mix(b.seed, k, j) % 2000) - 1000) / 1000, 6) for j in range(8)]
        return {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                "model": b.model, "usage": {"prompt_tokens": inp, "total_tokens": inp}}
    if b.endpoint == "/v1/responses":
        return {"id": f"resp_{rid}", "object": "response", "created_at": created, "status": "completed",
                "model": b.model, "output": [{"type": "message", "id": f"msg_{rid}", "status": "completed",
                                              "role": "assistant",
                                              "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                "usage": {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
                          "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
                          "total_tokens": inp + out}}
    if b.endpoint == "/v1/completions":
        return {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": b.model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}}
    if b.endpoint == "/v1/moderations":
        return {"id": f"modr-{rid}", "model": b.model,
                "results": [{"flagged": False, "categories": {}, "category_scores": {}}]}
    if b.endpoint == "/v1/chat/completions":
        return {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": created, "model": b.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
                          "prompt_tokens_details": {"cached_tokens": cached},
                          "completion_tokens_details": {"reasoning_tokens": reasoning}},
                "system_fingerprint": None}
    return {"created": created, "data": []}


def _success_line_size(b: SimBatch) -> int:
    """Bytes of one output line without padding (the padding adds about one byte per character)."""
    saved, b.content_chars = b.content_chars, 0
    try:
        line = {"id": "batch_req_0000000000000000", "custom_id": b.custom_id(b.lines - 1),
                "response": {"status_code": 200, "request_id": "req_" + "0" * 24,
                             "body": _success_body(b, 0, int(b.created_at), 500, 0, 300, 0)}, "error": None}
        return len(json.dumps(line)) + 1
    finally:
        b.content_chars = saved


# Lines a reader cannot use, as a broken writer or a damaged copy might leave them (CONTRACT §7.2 has three
# shapes; these are none of them). Injected with POST /_sim/batches {"malformed": N}.
MALFORMED_LINES = (
    b"this line is not JSON",
    b'{"id": "batch_req_cut", "custom_id": "request-1", "response": {"status_code": 200, "bo',
    b'["a JSON array", "not an object"]',
    b'{"id": "batch_req_anonymous", "response": null, "error": {"code": "server_error", "message": "no id"}}',
    b'{"id": "batch_req_number", "custom_id": 12345, "response": null, "error": {"code": "x", "message": "y"}}',
    b'{"id": "batch_req_latin1", "custom_id": "caf\xe9", "response": null, "error": null}',
    b'{"id": "batch_req_nul", "custom_id": "\x00", "response": null, "error": null}',
    b'{"id": "batch_req_empty", "custom_id": "request-1", "response": null, "error": null}',
)


def _result_lines(b: SimBatch, *, errors: bool, unrun_code: str | None, lines: int = 0, malformed: int = 0):
    """The output (errors=False) or error file of b, in processing order (unrelated to input order), with
    `malformed` broken lines spread among its `lines` good ones. Requests beyond b.ran() get no line."""
    created = int(b.stamps.get("in_progress_at") or b.created_at)
    buf, size, written, broken = [], 0, 0, 0
    for k in range(b.ran(b.total if errors and unrun_code else b.processed)):
        while broken < malformed and broken * lines // malformed <= written:
            buf.append(MALFORMED_LINES[broken % len(MALFORMED_LINES)].decode("latin-1") + "\n")
            broken += 1
        request_id = f"req_{_mix(b.seed, k, 5):016x}{k:08x}"
        line = None
        if k >= b.processed:
            line = {"id": f"batch_req_{_mix(b.seed, k, 4):016x}", "custom_id": b.custom_id(b.input_index(k)),
                    "response": None,
                    "error": {"code": unrun_code, "message": "This request could not be executed before the "
                              + ("completion window expired." if unrun_code == "batch_expired"
                                 else "batch was cancelled.")}}
        else:
            failed, inp, cached, out, reasoning, kind = b.outcome(k)
            if failed and errors:
                status, etype, code, message = _REQUEST_FAILURES[kind]
                line = {"id": f"batch_req_{_mix(b.seed, k, 4):016x}", "custom_id": b.custom_id(b.input_index(k)),
                        "response": {"status_code": status, "request_id": request_id,
                                     "body": {"error": {"message": message, "type": etype, "param": None,
                                                        "code": code}}},
                        "error": None}
            elif not failed and not errors:
                line = {"id": f"batch_req_{_mix(b.seed, k, 4):016x}", "custom_id": b.custom_id(b.input_index(k)),
                        "response": {"status_code": 200, "request_id": request_id,
                                     "body": _success_body(b, k, created, inp, cached, out, reasoning)},
                        "error": None}
        if line is not None:
            text = json.dumps(line) + "\n"
            buf.append(text)
            size += len(text)
            written += 1
            if size >= 1 << 16:
                yield "".join(buf).encode("latin-1")  # json.dumps writes ASCII; broken lines keep their bytes
                buf, size = [], 0
    while broken < malformed:
        buf.append(MALFORMED_LINES[broken % len(MALFORMED_LINES)].decode("latin-1") + "\n")
        broken += 1
    if buf:
        yield "".join(buf).encode("latin-1")
