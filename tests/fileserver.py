"""A small OpenAI-compatible files server whose metadata may disagree with the bytes it sends, on purpose.

The simulator's files always agree with themselves; this one announces `announced` bytes for every file (the
`bytes` of GET /files/{id}) and sends `content` for it (GET /files/{id}/content, with a true Content-Length).
With `cut_after` set, the content's answer announces the whole file but the connection closes after that many
bytes. The test may change any of them at any time.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, content: bytes, announced: int | None = None, cut_after: int | None = None):
        self.content, self.announced = content, len(content) if announced is None else announced
        self.cut_after = cut_after
        self.content_requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = self.path.split("/")  # "", "v1", "files", id[, "content"]
                if parts[1:3] == ["v1", "files"] and len(parts) == 5 and parts[4] == "content":
                    server.content_requests += 1
                    self._send(server.content, "application/octet-stream", cut_after=server.cut_after)
                elif parts[1:3] == ["v1", "files"] and len(parts) == 4:
                    self._send(json.dumps({"id": parts[3], "object": "file", "bytes": server.announced,
                                           "created_at": 1_800_000_000, "filename": "f.jsonl",
                                           "purpose": "batch_output", "status": "processed"}).encode(),
                               "application/json")
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def _send(self, body: bytes, content_type: str, cut_after: int | None = None):
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:cut_after])
                if cut_after is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FileServer":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
