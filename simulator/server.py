"""HTTP front of the simulator: routing, bearer auth, fault injection, stats, `/_sim/*` control."""

import json
import random
import re
import socket
import sys
import threading
import time
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .engine import ApiError, Simulator, _mix
from .webhooks import WebhookSender

FAULT_KINDS = ("429", "500", "503", "timeout", "drop", "truncated")
EXTRA_FAULT_KINDS = ("quota", "drip")
_ROUTES = [
    ("POST", re.compile(r"^/v1/files$"), "create_file"),
    ("GET", re.compile(r"^/v1/files$"), "list_files"),
    ("GET", re.compile(r"^/v1/files/(?P<id>[^/]+)$"), "retrieve_file"),
    ("DELETE", re.compile(r"^/v1/files/(?P<id>[^/]+)$"), "delete_file"),
    ("GET", re.compile(r"^/v1/files/(?P<id>[^/]+)/content$"), "file_content"),
    ("POST", re.compile(r"^/v1/batches$"), "create_batch"),
    ("GET", re.compile(r"^/v1/batches$"), "list_batches"),
    ("GET", re.compile(r"^/v1/batches/(?P<id>[^/]+)$"), "retrieve_batch"),
    ("POST", re.compile(r"^/v1/batches/(?P<id>[^/]+)/cancel$"), "cancel_batch"),
]


class Faults:
    """Which share of API requests misbehave, and how. Deterministic for a given seed."""

    def __init__(self, rate: float = 0.0, kinds=FAULT_KINDS, seed: int = 1, slow_seconds: float = 10.0,
                 retry_after: int = 1):
        self.lock = threading.Lock()
        self.configure(rate=rate, kinds=kinds, seed=seed, slow_seconds=slow_seconds, retry_after=retry_after)

    def configure(self, *, rate=None, kinds=None, seed=None, slow_seconds=None, retry_after=None, next=None,
                  lose_answer=None) -> None:
        """`next=N` makes exactly the next N API requests fault (drawn from `kinds`), whatever the rate.
        `lose_answer="upload"` (or "create") carries out the next POST /v1/files (POST /v1/batches), then drops
        the connection without answering: the client is left as if it had crashed between upload and create
        (or right after create). An empty value clears it."""
        if rate is not None:
            rate = float(rate)
            if not 0 <= rate <= 1:
                raise ValueError("rate must be between 0 and 1")
            self.rate = rate
        if kinds is not None:
            kinds = [k.strip() for k in kinds.split(",")] if isinstance(kinds, str) else list(kinds)
            unknown = set(kinds) - set(FAULT_KINDS + EXTRA_FAULT_KINDS)
            if unknown or not kinds:
                raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS + EXTRA_FAULT_KINDS}")
            self.kinds = kinds
        if seed is not None:
            self.rng = random.Random(int(seed))
        if slow_seconds is not None:
            self.slow_seconds = float(slow_seconds)
        if retry_after is not None:
            self.retry_after = max(1, int(retry_after))
        if next is not None:
            self.forced = max(0, int(next))
        if lose_answer is not None:
            if lose_answer not in ("", "upload", "create"):
                raise ValueError("lose_answer must be upload, create or empty")
            self.lose = lose_answer

    forced = 0
    lose = ""

    def take_lost_answer(self, step: str) -> bool:
        """Whether this `step`'s answer is to be lost (once)."""
        with self.lock:
            if self.lose == step:
                self.lose = ""
                return True
            return False

    def draw(self) -> str | None:
        with self.lock:
            return self._draw()

    def _draw(self) -> str | None:
        if self.forced > 0:
            self.forced -= 1
            return self.kinds[self.rng.randrange(len(self.kinds))]
        if self.rate <= 0:
            return None
        roll, pick = self.rng.random(), self.rng.randrange(len(self.kinds))
        return self.kinds[pick] if roll < self.rate else None

    def to_json(self) -> dict:
        return {"rate": self.rate, "kinds": self.kinds, "slow_seconds": self.slow_seconds,
                "retry_after": self.retry_after, "next": self.forced, "lose_answer": self.lose}


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.total = 0
            self.by_endpoint: Counter = Counter()
            self.by_status: Counter = Counter()
            self.faults: Counter = Counter()

    def count(self, endpoint: str, status: str, fault: str | None) -> None:
        with self.lock:
            self.total += 1
            self.by_endpoint[endpoint] += 1
            self.by_status[status] += 1
            if fault:
                self.faults[fault] += 1

    def to_json(self) -> dict:
        with self.lock:
            return {"requests": self.total, "by_endpoint": dict(self.by_endpoint),
                    "by_status": dict(self.by_status), "faults": dict(self.faults)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, simulator: Simulator, *, api_key: str | None, faults: Faults, latency_ms: int):
        super().__init__(address, _Handler)
        self.simulator, self.api_key, self.faults, self.latency_ms = simulator, api_key, faults, latency_ms
        self.stats = Stats()
        self.webhooks = WebhookSender(simulator)
        self._request_counter = 0
        self._counter_lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # a client that hung up (one that cut a slow answer, say): nothing to report
        super().handle_error(request, client_address)

    def next_request_id(self) -> str:
        with self._counter_lock:
            self._request_counter += 1
            return f"req_{_mix(self.simulator.seed, self._request_counter, 11):016x}{self._request_counter:016x}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # quiet: tests and benchmarks make thousands of requests
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the body until the
        # client's delayed ACK of the headers, 40 ms per answer — the API does not do that.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    # ----------------------------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.request_id = self.server.next_request_id()
        if url.path.startswith("/_sim/"):
            return self._control(method, url.path)
        route, params = None, {}
        for verb, pattern, name in _ROUTES:
            match = pattern.match(url.path)
            if match and verb == method:
                route, params = name, match.groupdict()
                break
        endpoint = f"{method} {re.sub(r'/(batch_|file-)[^/]+', r'/{id}', url.path)}"
        fault = self.server.faults.draw()
        if self.server.latency_ms:
            time.sleep(self.server.latency_ms / 1000)
        if fault:
            self.server.stats.count(endpoint, "dropped" if fault == "drop" else _FAULT_STATUS.get(fault, "200"), fault)
            return self._fault(fault, route, params)
        self._count_as = endpoint  # counted by send_response, before the client can read the answer
        try:
            if self.headers.get("Authorization") != f"Bearer {self.server.api_key}" and self.server.api_key:
                raise ApiError(401, "Incorrect API key provided. You can find your API key at "
                               "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
            if route is None:
                known = any(p.match(url.path) for _, p, _ in _ROUTES)
                raise ApiError(405 if known else 404, f"Invalid URL ({method} {url.path})",
                               code=None if known else "unknown_url")
            self._dispatch(route, params)
        except ApiError as exc:
            self._send_json(exc.status, exc.envelope())

    _count_as = None

    def send_response(self, code, message=None):
        if self._count_as:
            # Counted before the answer leaves: a client reading the stats right after its answer sees it.
            self.server.stats.count(self._count_as, str(code), None)
            self._count_as = None
        super().send_response(code, message)

    def _dispatch(self, route: str, params: dict) -> int:
        sim = self.server.simulator
        if route == "create_file":
            uploaded = sim.upload_file(**self._multipart())
            return self._drop() if self.server.faults.take_lost_answer("upload") else self._send_json(200, uploaded)
        if route == "list_files":
            return self._send_json(200, sim.list_files(
                purpose=self.query.get("purpose") or None, limit=self._int_param("limit", 10000),
                order=self.query.get("order", "desc"), after=self.query.get("after") or None))
        if route == "retrieve_file":
            return self._send_json(200, sim.retrieve_file(params["id"]))
        if route == "delete_file":
            return self._send_json(200, sim.delete_file(params["id"]))
        if route == "file_content":
            return self._send_file(sim.file_for_download(params["id"]))
        if route == "create_batch":
            created = sim.create_batch(self._json_body())
            return self._drop() if self.server.faults.take_lost_answer("create") else self._send_json(200, created)
        if route == "list_batches":
            return self._send_json(200, sim.list_batches(after=self.query.get("after") or None,
                                                         limit=self._int_param("limit", 20)))
        if route == "retrieve_batch":
            return self._send_json(200, sim.retrieve_batch(params["id"]))
        if route == "cancel_batch":
            return self._send_json(200, sim.cancel_batch(params["id"]))
        raise AssertionError(route)

    def _control(self, method: str, path: str) -> None:
        sim, server = self.server.simulator, self.server
        try:
            if (method, path) == ("GET", "/_sim/stats"):
                return self._send_json(200, {**server.stats.to_json(), "batches_created": len(sim.created_times)})
            if (method, path) == ("POST", "/_sim/reset-stats"):
                server.stats.reset()
                return self._send_json(200, server.stats.to_json())
            if (method, path) == ("POST", "/_sim/advance"):
                sim.advance(float(self.query.get("seconds", "0")))
                return self._send_json(200, {"now": sim.clock.now()})
            if (method, path) == ("GET", "/_sim/batches"):
                return self._send_json(200, {"object": "list", "data": sim.truth()})
            if (method, path) == ("POST", "/_sim/batches"):
                spec = self._json_body()
                if not isinstance(spec, dict):
                    raise ApiError(400, "expected a JSON object")
                status = spec.pop("status", "completed")
                allowed = {"created_at", "lines", "fail_share", "output_bytes", "endpoint", "model", "metadata",
                           "processing_seconds", "not_run", "malformed", "output_expires_after"}
                if set(spec) - allowed:
                    raise ApiError(400, f"unknown fields {sorted(set(spec) - allowed)}; allowed: {sorted(allowed)}")
                return self._send_json(200, sim.add_synthetic(status, **spec))
            if (method, path) == ("GET", "/_sim/webhooks"):
                return self._send_json(200, server.webhooks.to_json())
            if (method, path) == ("POST", "/_sim/webhooks"):
                spec = self._json_body()
                if not isinstance(spec, dict) or set(spec) - {"url", "secret"}:
                    raise ApiError(400, 'expected {"url": ..., "secret": "whsec_..."}; an empty url turns them off')
                return self._send_json(200, server.webhooks.configure(url=str(spec.get("url") or ""),
                                                                      secret=str(spec.get("secret") or "")))
            if (method, path) == ("POST", "/_sim/faults"):
                spec = self._json_body() if self.body else dict(self.query)
                try:
                    server.faults.configure(**{k: spec.get(k) for k in (
                        "rate", "kinds", "seed", "slow_seconds", "retry_after", "next", "lose_answer")})
                except (ValueError, TypeError) as exc:
                    raise ApiError(400, str(exc)) from None
                return self._send_json(200, server.faults.to_json())
            raise ApiError(404, f"Unknown control endpoint {method} {path}")
        except ApiError as exc:
            self._send_json(exc.status, exc.envelope())
        except ValueError as exc:
            self._send_json(400, ApiError(400, str(exc)).envelope())

    # ----- faults ------------------------------------------------------------------------------
    def _fault(self, kind: str, route, params) -> None:
        if kind == "429":
            return self._send_json(429, ApiError(429, "Rate limit reached for requests. Please try again in 1s.",
                                                 type="requests", code="rate_limit_exceeded").envelope(),
                                   extra={"Retry-After": str(self.server.faults.retry_after)})
        if kind == "quota":
            return self._send_json(429, ApiError(429, "You exceeded your current quota, please check your plan "
                                                 "and billing details.", type="insufficient_quota",
                                                 code="insufficient_quota").envelope())
        if kind == "500":
            return self._send_json(500, ApiError(500, "The server had an error while processing your request.",
                                                 type="server_error").envelope())
        if kind == "503":
            return self._send_json(503, ApiError(503, "The engine is currently overloaded, please try again later.",
                                                 type="server_error", code="server_is_overloaded").envelope())
        if kind == "timeout":
            time.sleep(self.server.faults.slow_seconds)
            return self._send_json(504, ApiError(504, "Gateway timeout.", type="server_error").envelope())
        if kind == "drop":
            return self._drop()
        if kind == "drip":  # a hostile or broken server: a valid answer, one byte every slow_seconds
            return self._drip(route, params)
        if kind == "truncated":
            text = json.dumps({"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None})
            data = text[: len(text) // 2].encode()
            self.send_response(200)
            self._common_headers("application/json", len(data))
            self.end_headers()
            self.wfile.write(data)

    def _drop(self) -> None:
        if self._count_as:  # the work was done, its answer lost (lose_answer)
            self.server.stats.count(self._count_as, "dropped", "lose_answer")
            self._count_as = None
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _drip(self, route, params) -> None:
        """File content drips the file's real bytes (a 404 for an unknown file is sent at once); any other
        route drips an empty list page."""
        if route == "file_content":
            try:
                f = self.server.simulator.file_for_download(params["id"])
            except ApiError as exc:
                self._send_json(exc.status, exc.envelope())
                return
            content_type, size, chunks = "application/octet-stream", f.size, f.chunks()
        else:
            data = json.dumps({"object": "list", "data": [], "has_more": False}).encode()
            content_type, size, chunks = "application/json", len(data), [data]
        self.send_response(200)
        self._common_headers(content_type, size)
        self.end_headers()
        try:
            for chunk in chunks:
                for i in range(len(chunk)):
                    self.wfile.write(chunk[i:i + 1])
                    self.wfile.flush()
                    time.sleep(self.server.faults.slow_seconds)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ----- helpers -----------------------------------------------------------------------------
    def _int_param(self, name: str, default: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ApiError(400, f"Invalid '{name}': expected an integer, got '{raw}'.", param=name) from None

    def _json_body(self):
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise ApiError(400, "We could not parse the JSON body of your request.") from None

    def _multipart(self) -> dict:
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ApiError(400, "Expected a multipart/form-data body.", param="file")
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + self.body)
        fields, filename, data = {}, None, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                filename, data = part.get_filename() or "upload", part.get_payload(decode=True) or b""
            elif name:
                fields[name] = part.get_content().strip() if part.get_content_maintype() == "text" else ""
        if data is None:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        if "purpose" not in fields:
            raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
        unknown = set(fields) - {"purpose", "expires_after[anchor]", "expires_after[seconds]"}
        if unknown:
            raise ApiError(400, f"Unrecognized request argument supplied: {sorted(unknown)[0]}",
                           param=sorted(unknown)[0])
        expires = None
        if "expires_after[anchor]" in fields or "expires_after[seconds]" in fields:
            expires = {"anchor": fields.get("expires_after[anchor]"), "seconds": fields.get("expires_after[seconds]")}
        return {"filename": filename, "purpose": fields["purpose"], "data": data, "expires_after": expires}

    def _common_headers(self, content_type: str, length: int, extra: dict | None = None) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("x-request-id", self.request_id)
        self.send_header("openai-version", "2020-10-01")
        self.send_header("openai-processing-ms", str(self.server.latency_ms or 1))
        if not self.path.startswith("/_sim/"):
            window = 60 - int(time.time()) % 60
            used = self.server.stats.total % 10000
            self.send_header("x-ratelimit-limit-requests", "10000")
            self.send_header("x-ratelimit-remaining-requests", str(10000 - used - 1))
            self.send_header("x-ratelimit-reset-requests", f"{window}s")
            self.send_header("x-ratelimit-limit-tokens", "2000000")
            self.send_header("x-ratelimit-remaining-tokens", "2000000")
            self.send_header("x-ratelimit-reset-tokens", "0s")
        for key, value in (extra or {}).items():
            self.send_header(key, value)

    def _send_json(self, status: int, payload, extra: dict | None = None) -> int:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self._common_headers("application/json", len(data), extra)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout fault, say)
            self.close_connection = True
        return status

    def _send_file(self, f) -> int:
        self.send_response(200)
        self._common_headers("application/octet-stream", f.size,
                             {"Content-Disposition": f'attachment; filename="{f.filename}"'})
        self.end_headers()
        try:
            for chunk in f.chunks():
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        return 200


_FAULT_STATUS = {"429": "429", "quota": "429", "drip": "200", "500": "500", "503": "503", "timeout": "504", "truncated": "200"}


class SimulatorServer:
    """The simulator on a real port, in a background thread: `with SimulatorServer(...) as sim: sim.url`."""

    def __init__(self, simulator: Simulator | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = "sk-sim", fault_rate: float = 0.0, fault_kinds=FAULT_KINDS, fault_seed: int = 1,
                 latency_ms: int = 0):
        self.simulator = simulator or Simulator()
        self.api_key = api_key
        self.faults = Faults(rate=fault_rate, kinds=fault_kinds, seed=fault_seed)
        self.httpd = _Server((host, port), self.simulator, api_key=api_key, faults=self.faults, latency_ms=latency_ms)
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = None

    @property
    def url(self) -> str:
        """The API base URL, like https://api.openai.com/v1."""
        return f"http://{self.host}:{self.port}/v1"

    # The background loop notices stop() only between polls (0.5 s by default), and tests stop hundreds of servers.
    poll_seconds = 0.01

    def start(self) -> "SimulatorServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(self.poll_seconds,),
                                        name="simulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a loop that never started otherwise
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.webhooks.stop()
        self.httpd.server_close()

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # The Python mirror of /_sim/*.
    def stats(self) -> dict:
        return {**self.httpd.stats.to_json(), "batches_created": len(self.simulator.created_times)}

    def reset_stats(self) -> None:
        self.httpd.stats.reset()

    def advance(self, seconds: float) -> None:
        self.simulator.advance(seconds)

    def truth(self) -> list[dict]:
        return self.simulator.truth()

    def set_faults(self, **spec) -> dict:
        self.faults.configure(**spec)
        return self.faults.to_json()

    def inject_batch(self, status: str = "completed", **spec) -> dict:
        return self.simulator.add_synthetic(status, **spec)

    def send_webhooks(self, url: str, secret: str) -> dict:
        """Send batch.* events, signed with `secret`, to `url` from now on (an empty url stops them)."""
        return self.httpd.webhooks.configure(url=url, secret=secret)

    def webhooks_sent(self) -> list[dict]:
        return self.httpd.webhooks.to_json()["sent"]
