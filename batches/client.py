"""The only module that speaks HTTP to the Batch API.

Every failure leaves here as one of two exceptions: TransientError (try again later, maybe after
`retry_after` seconds) or PermanentError (a human has to act: bad key, unknown id, quota).
Quick retries happen inside a call only where they are cheap and safe: connection/read errors and
500/502/503/504 on GETs. A 429 is never slept on here: the caller schedules the connection's next
attempt instead. Every call, retries and body included, ends within API_CALL_DEADLINE seconds: a
server that drip-feeds its answer cannot hold a worker or a web thread longer than that.
"""

import io
import json
import secrets
import socket
import threading
import time
from email.utils import parsedate_to_datetime

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from .models import Connection, KeyUnreadable, api_host_problem
from .redact import remember_secret, shown

# 429 bodies that mean "out of money", not "slow down": retrying cannot help.
BILLING_CODES = {
    "insufficient_quota",
    "billing_hard_limit_reached",
    "billing_not_active",
    "credit_balance_exhausted",
    "spend_limit_reached",
    "usage_limit_reached",
    "access_terminated",
}


class ApiError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 error_type: str | None = None, request_id: str = "", retry_after: float | None = None):
        self.message = shown(message)
        super().__init__(self.message)
        self.status, self.code, self.error_type = status, code, error_type
        self.request_id, self.retry_after = request_id, retry_after

    def __str__(self) -> str:
        if self.status is None and self.error_type == "configuration":  # nothing was sent
            return self.message
        prefix = f"HTTP {self.status}" if self.status else "Network error"
        code = f" {self.code}" if self.code else ""
        return f"{prefix}{code}: {self.message}"


class TransientError(ApiError):
    """Worth retrying later: network trouble, 5xx, rate limits, malformed or truncated bodies."""


class PermanentError(ApiError):
    """Retrying will not help until someone acts: bad key, no permission, unknown id, quota, bad request."""


class BatchApi:
    """A session for one connection. `requests_made` counts HTTP requests, retries included.

    Use it as a context manager (`with BatchApi.for_connection(c) as api:`) so its sockets close."""

    def __init__(self, *, base_url: str, api_key: str, organization: str = "", project: str = ""):
        remember_secret(api_key)  # an error that echoes it is redacted whatever its format
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"Batchboard/{settings.VERSION} python-requests/{requests.__version__}",
            "Accept": "application/json",
            # Plain bytes: a compressed body would let one read loop on inside urllib3, and would make
            # the length a download announces differ from what it streams.
            "Accept-Encoding": "identity",
        })
        if organization:
            self.session.headers["OpenAI-Organization"] = organization
        if project:
            self.session.headers["OpenAI-Project"] = project
        self.requests_made = 0
        adapter = _WatchedAdapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def for_connection(cls, connection: Connection) -> "BatchApi":
        # Checked here too, not only in the forms: a row edited in the database cannot send its key elsewhere.
        if problem := api_host_problem(connection.base_url):
            raise PermanentError(problem, error_type="configuration")
        try:
            key = connection.api_key
        except KeyUnreadable as exc:
            raise PermanentError(str(exc), error_type="configuration") from None
        return cls(base_url=connection.base_url, api_key=key, organization=connection.organization,
                   project=connection.project)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "BatchApi":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- endpoints ---------------------------------------------------------------------------
    def list_batches(self, *, after: str | None = None, limit: int = 100) -> dict:
        params = {"limit": limit}
        if after:
            params["after"] = after
        page = self._json("GET", "/batches", params=params)
        if not isinstance(page.get("data"), list):
            raise TransientError("the batch list has no `data` array", status=200)
        return page

    def retrieve_batch(self, batch_id: str) -> dict:
        return self._json("GET", f"/batches/{_segment(batch_id)}")

    def cancel_batch(self, batch_id: str) -> tuple[dict, str]:
        """POST the cancel; returns the batch and the API's request id."""
        payload, response = self._call_json("POST", f"/batches/{_segment(batch_id)}/cancel", json={})
        return payload, response.headers.get("x-request-id", "")

    def file_metadata(self, file_id: str) -> dict:
        return self._json("GET", f"/files/{_segment(file_id)}")

    def file_content(self, file_id: str) -> requests.Response:
        """The open, streamed response for a file's bytes; read it with stream_chunks, then close it."""
        deadline = time.monotonic() + settings.API_CALL_DEADLINE
        with _Watchdog(deadline, self.base_url):  # until the headers are in; the body has its own limits
            return self._send("GET", f"/files/{_segment(file_id)}/content", deadline=deadline,
                              headers={"Accept": "application/octet-stream"})

    def list_files(self, *, purpose: str = "batch", after: str | None = None, limit: int = 100) -> dict:
        """One page of files, newest first."""
        params = {"purpose": purpose, "limit": limit, "order": "desc"}
        if after:
            params["after"] = after
        page = self._json("GET", "/files", params=params)
        if not isinstance(page.get("data"), list):
            raise TransientError("the file list has no `data` array", status=200)
        return page

    def upload_file(self, *, filename: str, content, size: int) -> tuple[dict, str]:
        """POST /files with purpose=batch, the body read from `content` (an open binary file of `size` bytes)
        as it is sent, never whole in memory. Returns the file object and the API's request id. Allowed
        SUBMIT_UPLOAD_DEADLINE seconds: 200 MB takes longer than an ordinary call."""
        body = _MultipartBody({"purpose": "batch"}, filename, content, size)
        payload, response = self._call_json("POST", "/files", data=body, seconds=settings.SUBMIT_UPLOAD_DEADLINE,
                                             headers={"Content-Type": body.content_type})
        if not isinstance(payload.get("id"), str) or not payload["id"]:
            raise TransientError("the uploaded file's answer has no id", status=200)
        return payload, response.headers.get("x-request-id", "")

    def create_batch(self, *, input_file_id: str, endpoint: str, completion_window: str,
                     metadata: dict) -> tuple[dict, str]:
        """POST /batches; returns the batch and the API's request id. Never repeated here: a lost answer may
        still have created the batch (actions.submit looks for it before creating again)."""
        body = {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": completion_window,
                "metadata": metadata}
        payload, response = self._call_json("POST", "/batches", json=body)
        return payload, response.headers.get("x-request-id", "")

    # ----- plumbing ----------------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs) -> dict:
        return self._call_json(method, path, **kwargs)[0]

    def _call_json(self, method: str, path: str, *, seconds: float | None = None,
                   **kwargs) -> tuple[dict, requests.Response]:
        deadline = time.monotonic() + (seconds or settings.API_CALL_DEADLINE)
        with _Watchdog(deadline, self.base_url):
            response = self._send(method, path, deadline=deadline, **kwargs)
            return self._decode(response, deadline), response

    def _send(self, method: str, path: str, *, deadline: float | None = None, **kwargs) -> requests.Response:
        """One call: quick retries of idempotent failures, all within the deadline. Returns an open,
        streamed response (its body not read yet)."""
        deadline = deadline or time.monotonic() + settings.API_CALL_DEADLINE
        attempts = 1 + (settings.API_RETRIES if method == "GET" else 0)  # a POST (cancel) is never repeated
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientError(f"no answer from {self.base_url} within {settings.API_CALL_DEADLINE:g}s")
            if attempt:
                pause = min(settings.API_RETRY_BACKOFF * 2 ** (attempt - 1), 2.0, remaining / 2)
                time.sleep(pause)
                remaining -= pause
            timeout = (min(settings.API_CONNECT_TIMEOUT, remaining), min(settings.API_READ_TIMEOUT, remaining))
            self.requests_made += 1
            try:
                response = self.session.request(method, self.base_url + path, timeout=timeout, stream=True,
                                                allow_redirects=False, **kwargs)
            except requests.RequestException as exc:
                _Watchdog.raise_if_cut()
                if attempt + 1 < attempts:
                    continue
                raise TransientError(_network_failure(exc, self.base_url)) from None
            if response.status_code in _RETRY_STATUSES and attempt + 1 < attempts:
                response.close()
                continue
            if response.status_code >= 400:
                error = _classify(response, deadline)
                response.close()
                raise error
            return response
        raise AssertionError("unreachable")

    def _decode(self, response: requests.Response, deadline: float) -> dict:
        request_id = response.headers.get("x-request-id", "")
        try:
            data = json.loads(read_body(response, deadline))
        except (ValueError, requests.RequestException):
            raise TransientError("the API sent a malformed or truncated JSON body", status=response.status_code,
                                 request_id=request_id) from None
        except RecursionError:
            raise TransientError("the API sent JSON nested too deeply to read", status=response.status_code,
                                 request_id=request_id) from None
        finally:
            response.close()
        if not isinstance(data, dict):
            raise TransientError("the API sent JSON that is not an object", status=response.status_code,
                                 request_id=request_id)
        return data


_RETRY_STATUSES = (500, 502, 503, 504)


class _MultipartBody:
    """A multipart/form-data body of form fields and one file, read from the open file as requests sends it
    (requests would otherwise build the whole body in memory). Its length is known, so it goes out with a
    Content-Length, as the API expects."""

    def __init__(self, fields: dict, filename: str, content, size: int):
        boundary = "batchboard-" + secrets.token_hex(16)
        head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                        for name, value in fields.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: application/jsonl\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self._parts, self._length = [io.BytesIO(head), content, io.BytesIO(tail)], len(head) + size + len(tail)

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        out = b""
        while self._parts and (size < 0 or len(out) < size):
            chunk = self._parts[0].read(-1 if size < 0 else size - len(out))
            if chunk:
                out += chunk
            else:
                self._parts.pop(0)
        return out
_watched = threading.local()  # the Watchdog of the call running in this thread, if any


class _Watchdog:
    """Ends a call still running at its deadline by shutting its socket. Per-read timeouts alone let a server
    that drips its status line, its headers or a chunked body one byte at a time hold the caller for ever;
    this covers every phase. The caller then gets a TransientError saying the deadline passed."""

    def __init__(self, deadline: float, base_url: str):
        self.deadline, self.base_url, self.conn, self.cut = deadline, base_url, None, False
        self._lock = threading.Lock()

    def __enter__(self) -> "_Watchdog":
        self._timer = threading.Timer(max(self.deadline - time.monotonic(), 0), self._fire)
        self._timer.daemon = True
        self._timer.start()
        _watched.current = self
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._timer.cancel()
        _watched.current = None
        if self.cut and exc_type is not None:
            raise self._error() from None

    def _fire(self) -> None:
        with self._lock:
            self.cut = True
            sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _error(self) -> "TransientError":
        return TransientError(f"the answer took longer than {settings.API_CALL_DEADLINE:g}s; cut off")

    @staticmethod
    def watch(conn) -> None:
        """Called by the connection pool for each request: the socket to shut is this connection's."""
        watchdog = getattr(_watched, "current", None)
        if watchdog is not None:
            with watchdog._lock:
                watchdog.conn = conn
                cut = watchdog.cut
            if cut:  # the deadline passed between two requests (a retry): do not start another
                raise watchdog._error()

    @staticmethod
    def raise_if_cut() -> None:
        watchdog = getattr(_watched, "current", None)
        if watchdog is not None and watchdog.cut:
            raise watchdog._error()


class _WatchedPool:
    def _make_request(self, conn, *args, **kwargs):
        _Watchdog.watch(conn)
        return super()._make_request(conn, *args, **kwargs)


class _WatchedHTTPPool(_WatchedPool, HTTPConnectionPool):
    pass


class _WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    pass


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, with connection pools that tell the call's Watchdog which socket it is using."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def read_chunks(response: requests.Response, deadline: float | None, chunk_size: int = 64 * 1024, *,
                stall: float | None = None, min_rate: float = 0, grace: float = 0, allowed: float | None = None):
    """The body of a streamed response, chunk by chunk as it arrives. Cut off with a TransientError once the
    deadline passes (`allowed` seconds, for the message; API_CALL_DEADLINE by default), once nothing arrives for
    `stall` seconds (API_READ_TIMEOUT by default), or, after `grace` seconds, once the average pace falls under
    `min_rate` bytes per second: a per-read timeout alone lets a server drip one byte at a time forever."""
    raw = response.raw
    stall = stall or settings.API_READ_TIMEOUT
    started, received = time.monotonic(), 0
    while True:
        now = time.monotonic()
        limits = [(now + stall, f"nothing arrived for {stall:g}s")]
        if deadline is not None:
            limits.append((deadline, f"the answer took longer than {allowed or settings.API_CALL_DEADLINE:g}s"))
        if min_rate:
            limits.append((started + max(grace, received / min_rate), f"the answer came slower than {min_rate:g} "
                                                                       "bytes/s"))
        until, why = min(limits)
        cut = TransientError(f"{why}; cut off")  # a network failure, whatever the status line said
        if until <= now:
            raise cut
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(until - now)
        try:
            chunk = raw.read1(chunk_size, decode_content=True)
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # socket/urllib3 errors mid-body
            if time.monotonic() >= until:
                raise cut from None
            raise TransientError(f"the connection broke mid-answer: {type(exc).__name__}") from None
        if not chunk:
            return
        received += len(chunk)
        yield chunk


def stream_chunks(response: requests.Response, *, seconds: float | None = None, chunk_size: int = 64 * 1024):
    """A file's bytes as they arrive (downloads, scans), cut off once nothing arrives for
    FILE_STREAM_STALL_SECONDS, once the pace stays under FILE_STREAM_MIN_BYTES_PER_SECOND after
    FILE_STREAM_GRACE_SECONDS, and after `seconds` in all when given."""
    return read_chunks(response, time.monotonic() + seconds if seconds else None, chunk_size,
                       stall=settings.FILE_STREAM_STALL_SECONDS, min_rate=settings.FILE_STREAM_MIN_BYTES_PER_SECOND,
                       grace=settings.FILE_STREAM_GRACE_SECONDS, allowed=seconds)


def read_body(response: requests.Response, deadline: float, limit: int | None = None) -> bytes:
    limit = limit or settings.API_MAX_RESPONSE_BYTES
    body = bytearray()
    for chunk in read_chunks(response, deadline):
        body += chunk
        if len(body) > limit:
            raise TransientError(f"the answer is larger than {limit} bytes", status=response.status_code)
    return bytes(body)


def _network_failure(exc: requests.RequestException, base_url: str) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None  # urllib3's MaxRetryError
    if isinstance(exc, requests.Timeout) or isinstance(reason, ReadTimeoutError):
        return f"timed out talking to {base_url}"
    if isinstance(reason, NewConnectionError):
        return f"could not connect to {base_url}"
    return f"could not reach {base_url}: {type(reason or exc).__name__}"


def _segment(value: str) -> str:
    return requests.utils.quote(str(value), safe="")


def _retry_after(response: requests.Response) -> float | None:
    raw_ms = response.headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None


def _classify(response: requests.Response, deadline: float) -> ApiError:
    status = response.status_code
    request_id = response.headers.get("x-request-id", "")
    message, code, error_type = response.reason or "error", None, None
    try:
        error = json.loads(read_body(response, deadline, limit=64 * 1024)).get("error")
    except (ValueError, AttributeError, RecursionError, ApiError, requests.RequestException):
        error = None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        code = str(error["code"])[:100] if error.get("code") else None
        error_type = str(error["type"])[:100] if error.get("type") else None
    details = {"status": status, "code": code, "error_type": error_type, "request_id": request_id}
    if status == 429:
        if error_type in BILLING_CODES or code in BILLING_CODES:
            return PermanentError(message, **details)
        return TransientError(message, retry_after=_retry_after(response), **details)
    if status in (408, 409) or status >= 500:
        return TransientError(message, retry_after=_retry_after(response), **details)
    return PermanentError(message, **details)
