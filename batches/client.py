"""The only module that speaks HTTP to the Batch API.

Every failure leaves here as one of two exceptions: TransientError (try again later, maybe after
`retry_after` seconds) or PermanentError (a human has to act: bad key, unknown id, quota).
Quick retries happen inside a call only where they are cheap and safe: connection/read errors and
500/502/503/504 on GETs, through urllib3's Retry. A 429 is never slept on here: the caller
schedules the connection's next attempt instead.
"""

from email.utils import parsedate_to_datetime
from time import time

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from .models import Connection, KeyUnreadable
from .redact import redact

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
_MESSAGE_LIMIT = 500


class ApiError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 error_type: str | None = None, request_id: str = "", retry_after: float | None = None):
        super().__init__(redact(message))
        self.message = redact(message)
        self.status, self.code, self.error_type = status, code, error_type
        self.request_id, self.retry_after = request_id, retry_after

    def __str__(self) -> str:
        prefix = f"HTTP {self.status}" if self.status else "Network error"
        code = f" {self.code}" if self.code else ""
        return f"{prefix}{code}: {self.message}"


class TransientError(ApiError):
    """Worth retrying later: network trouble, 5xx, rate limits, malformed or truncated bodies."""


class PermanentError(ApiError):
    """Retrying will not help until someone acts: bad key, no permission, unknown id, quota, bad request."""


def _retry_policy() -> Retry:
    return Retry(
        total=settings.API_RETRIES,
        connect=settings.API_RETRIES,
        read=settings.API_RETRIES,
        status=settings.API_RETRIES,
        other=0,
        allowed_methods=frozenset({"GET"}),  # a POST (cancel) is never blindly repeated
        status_forcelist=(500, 502, 503, 504),
        backoff_factor=settings.API_RETRY_BACKOFF,
        backoff_max=2.0,
        raise_on_status=False,
        respect_retry_after_header=False,
    )


class BatchApi:
    """A session for one connection. `requests_made` counts HTTP requests, retries included."""

    def __init__(self, *, base_url: str, api_key: str, organization: str = "", project: str = ""):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"Batchboard/{settings.VERSION} python-requests/{requests.__version__}",
            "Accept": "application/json",
        })
        if organization:
            self.session.headers["OpenAI-Organization"] = organization
        if project:
            self.session.headers["OpenAI-Project"] = project
        adapter = HTTPAdapter(max_retries=_retry_policy())
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.requests_made = 0

    @classmethod
    def for_connection(cls, connection: Connection) -> "BatchApi":
        try:
            key = connection.api_key
        except KeyUnreadable as exc:
            raise PermanentError(str(exc)) from None
        return cls(base_url=connection.base_url, api_key=key, organization=connection.organization,
                   project=connection.project)

    def close(self) -> None:
        self.session.close()

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
        response = self._send("POST", f"/batches/{_segment(batch_id)}/cancel", json={})
        return self._decode(response), response.headers.get("x-request-id", "")

    def file_metadata(self, file_id: str) -> dict:
        return self._json("GET", f"/files/{_segment(file_id)}")

    def file_content(self, file_id: str) -> requests.Response:
        """The open, streamed response for a file's bytes; read it with iter_content, then close it."""
        return self._send("GET", f"/files/{_segment(file_id)}/content", stream=True,
                          headers={"Accept": "application/octet-stream"})

    # ----- plumbing ----------------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs) -> dict:
        return self._decode(self._send(method, path, **kwargs))

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        timeout = (settings.API_CONNECT_TIMEOUT, settings.API_READ_TIMEOUT)
        try:
            response = self.session.request(method, self.base_url + path, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            self.requests_made += 1 + (settings.API_RETRIES if method == "GET" else 0)
            raise TransientError(_network_failure(exc, self.base_url)) from None
        retries = getattr(response.raw, "retries", None)
        self.requests_made += 1 + (len(retries.history) if retries else 0)
        if response.status_code >= 400:
            error = _classify(response)
            response.close()
            raise error
        return response

    def _decode(self, response: requests.Response) -> dict:
        request_id = response.headers.get("x-request-id", "")
        try:
            data = response.json()
        except (ValueError, requests.RequestException):
            raise TransientError("the API sent a malformed or truncated JSON body", status=response.status_code,
                                 request_id=request_id) from None
        if not isinstance(data, dict):
            raise TransientError("the API sent JSON that is not an object", status=response.status_code,
                                 request_id=request_id)
        return data


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
            return max(parsedate_to_datetime(raw).timestamp() - time(), 0.0)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None


def _classify(response: requests.Response) -> ApiError:
    status = response.status_code
    request_id = response.headers.get("x-request-id", "")
    message, code, error_type = response.reason or "error", None, None
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError, requests.RequestException):
        error = None
    if isinstance(error, dict):
        message = str(error.get("message") or message)[:_MESSAGE_LIMIT]
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
