"""A small OpenAI-compatible batch server whose list misbehaves on purpose (order, growth, payloads).

The simulator follows the contract; this one is for the servers that do not: compatible gateways that
list oldest first, lists with one batch out of order, payloads no parser expects.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def batch(n: int, **extra) -> dict:
    """Batch number n, created at second 1_800_000_000 + n (larger n = newer)."""
    return {"id": f"batch_{n:06d}", "object": "batch", "endpoint": "/v1/chat/completions",
            "input_file_id": f"file-{n}", "completion_window": "24h", "status": "completed",
            "created_at": 1_800_000_000 + n, "request_counts": {"total": 2, "completed": 2, "failed": 0}, **extra}


class ListServer:
    """Serves `batches` (a list the test may change at any time) in `order`: "newest_first",
    "oldest_first", or "swapped" (newest first with the two newest batches the other way round).
    `after` and `limit` work as in the API, in the server's own order."""

    def __init__(self, batches: list[dict], order: str = "newest_first"):
        self.batches, self.order, self.lock = batches, order, threading.Lock()
        self.list_requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                status, payload = server.answer(url.path, query)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def ordered(self) -> list[dict]:
        rows = sorted(self.batches, key=lambda b: b["created_at"], reverse=self.order != "oldest_first")
        if self.order == "swapped" and len(rows) > 1:
            rows[0], rows[1] = rows[1], rows[0]
        return rows

    def answer(self, path: str, query: dict) -> tuple[int, dict]:
        with self.lock:
            rows = self.ordered()
        if path == "/v1/batches":
            self.list_requests += 1
            start = 0
            if query.get("after"):
                ids = [b["id"] for b in rows]
                if query["after"] not in ids:
                    return 400, {"error": {"message": "unknown cursor", "param": "after"}}
                start = ids.index(query["after"]) + 1
            limit = int(query.get("limit", 20))
            page = rows[start:start + limit]
            return 200, {"object": "list", "data": page, "has_more": start + limit < len(rows),
                         "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}
        found = [b for b in rows if path == f"/v1/batches/{b['id']}"]
        if found:
            return 200, found[0]
        return 404, {"error": {"message": "not found"}}

    def __enter__(self) -> "ListServer":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
