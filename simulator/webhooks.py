"""The simulator's webhooks: `batch.completed`, `batch.failed`, `batch.expired` and `batch.cancelled`, signed by
the Standard Webhooks scheme as the OpenAI webhooks guide describes, POSTed to one configured URL.

Off until configured (`POST /_sim/webhooks {"url", "secret"}`). Then a ticker thread steps the running batches
every `tick` seconds, so that a batch finishes (and its event leaves) without anyone reading it, and a sender
thread delivers the events one by one, never holding up the API. A delivery answered with anything but 2xx is
tried again (the same webhook-id, a new timestamp) after 0.2, 0.4, 0.8… s, up to `attempts` times.
"""

import json
import queue
import threading
import time
from datetime import datetime, timezone

import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

EVENT_TYPES = {"completed": "batch.completed", "failed": "batch.failed", "expired": "batch.expired",
               "cancelled": "batch.cancelled"}


class WebhookSender:
    def __init__(self, simulator, *, tick: float = 0.1, attempts: int = 5):
        self.simulator, self.tick, self.attempts = simulator, tick, attempts
        self.lock = threading.Lock()
        self.url, self.webhook = "", None
        self.events: queue.Queue = queue.Queue()
        self.sent: list[dict] = []  # one entry per attempt: what was sent and the answer's status code
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counter = 0

    def configure(self, *, url: str, secret: str = "") -> dict:
        """Send to `url`, signed with `secret` (whsec_…); an empty url turns webhooks off."""
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        try:
            webhook = Webhook(secret) if url else None  # a bad secret is refused here, not in the sender
        except (ValueError, EmptyWebhookSecretError):
            raise ValueError("secret must be whsec_ followed by base64") from None
        with self.lock:
            self.url, self.webhook = url, webhook
        self.simulator.on_terminal = self._enqueue if url else None
        if url and not self._threads:
            self._stop.clear()
            self._threads = [threading.Thread(target=loop, name=f"simulator-webhooks-{loop.__name__}", daemon=True)
                             for loop in (self._ticker, self._sender)]
            for thread in self._threads:
                thread.start()
        return self.to_json()

    def stop(self) -> None:
        self.simulator.on_terminal = None
        self._stop.set()
        self.events.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def to_json(self) -> dict:
        with self.lock:
            return {"url": self.url, "sent": list(self.sent)}

    # ----- threads -----------------------------------------------------------------------------
    def _enqueue(self, batch_id: str, status: str, at: float) -> None:
        with self.lock:
            self._counter += 1
            number = self._counter
        event = {"object": "event", "id": f"evt_sim{number:016x}", "type": EVENT_TYPES[status],
                 "created_at": int(at), "data": {"id": batch_id}}
        self.events.put((f"msg_sim{number:016x}", event))

    def _ticker(self) -> None:
        while not self._stop.wait(self.tick):
            self.simulator.step_all()

    def _sender(self) -> None:
        while not self._stop.is_set():
            item = self.events.get()
            if item is None:
                return
            message_id, event = item
            body = json.dumps(event)
            for attempt in range(self.attempts):
                if self._deliver(message_id, event, body) or self._stop.wait(0.2 * 2 ** attempt):
                    break

    def _deliver(self, message_id: str, event: dict, body: str) -> bool:
        with self.lock:
            url, webhook = self.url, self.webhook
        if not url:
            return True  # turned off meanwhile: dropped
        now = datetime.now(tz=timezone.utc)
        headers = {"Content-Type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": webhook.sign(message_id, now, body)}
        try:
            status = requests.post(url, data=body.encode(), headers=headers, timeout=5,
                                   allow_redirects=False).status_code
        except requests.RequestException:
            status = None
        with self.lock:
            self.sent.append({"webhook_id": message_id, "type": event["type"], "batch_id": event["data"]["id"],
                              "status_code": status, "sent_at": time.time()})
        return status is not None and 200 <= status < 300
