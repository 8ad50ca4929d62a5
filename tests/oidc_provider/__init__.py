"""Driving the test OpenID Connect provider (settings.py, serve.py here) from tests: start it on a free port, turn
its knobs, and sign in at it the way a browser would (requests.Session: its log-in form, then its consent form)."""

import json
import os
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent.parent
PASSWORD = "provider-pw-for-tests-only"
CLIENT_ID, CLIENT_SECRET = "batchboard", "batchboard-test-client-secret"  # Batchboard's client there (serve.py)


class _Forms(HTMLParser):
    """Each form's action and its inputs' names and values (the submit button's too, when it has a name)."""

    def __init__(self):
        super().__init__()
        self.forms: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append((attrs.get("action") or "", {}))
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1][1][attrs["name"]] = attrs.get("value") or ""


class Provider:
    """The provider in a subprocess, with its database and knobs file in `directory`."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.url}/o"
        self.client_id, self.client_secret = CLIENT_ID, CLIENT_SECRET
        self.users: dict[str, dict] = {}
        self.knobs: dict = {}
        self.process = None

    def __enter__(self):
        self.reset()
        self.log = open(self.directory / "provider.log", "w")
        env = {**os.environ, "OIDC_PROVIDER_DIR": str(self.directory), "OIDC_PROVIDER_PORT": str(self.port),
               "DJANGO_SETTINGS_MODULE": "tests.oidc_provider.settings"}
        self.process = subprocess.Popen([sys.executable, "-m", "tests.oidc_provider.serve"], cwd=ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("the test provider exited:\n" + (self.directory / "provider.log").read_text())
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError("the test provider did not start within 60 s")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    # ----- knobs --------------------------------------------------------------------------------------------
    def _write(self):
        path = self.directory / "knobs.json"
        path.with_suffix(".tmp").write_text(json.dumps({**self.knobs, "users": self.users}))
        path.with_suffix(".tmp").replace(path)  # the provider never reads half a file

    def reset(self):
        self.users, self.knobs = {}, {}
        self._write()

    def set_knobs(self, **knobs):
        """audience="...", expired=True, issuer="...": the ID tokens it issues from now on misbehave so."""
        self.knobs.update(knobs)
        self._write()

    def add_user(self, username: str, *, email: str, groups=(), email_verified=True, name=""):
        self.users[username] = {"password": PASSWORD, "email": email, "groups": list(groups),
                                "email_verified": email_verified, "name": name}
        self._write()

    def change_user(self, username: str, **changes):
        self.users[username].update({k: list(v) if k == "groups" else v for k, v in changes.items()})
        self._write()

    # ----- a browser at the provider ------------------------------------------------------------------------
    def sign_in(self, authorize_url: str, username: str, *, browser: requests.Session | None = None,
                consent: bool = True) -> str:
        """Follow `authorize_url` at the provider as `browser` (a fresh one by default): log in as `username` when
        asked, consent when asked (or refuse), and return where the provider sends the browser back (the app's
        callback URL, with code and state, or error)."""
        browser = browser or requests.Session()
        url, method, data = authorize_url, "GET", None
        for _ in range(10):
            response = browser.request(method, url, data=data, allow_redirects=False, timeout=10)
            if response.is_redirect:
                location = urljoin(url, response.headers["Location"])
                if urlsplit(location).netloc != urlsplit(self.url).netloc:
                    return location
                url, method, data = location, "GET", None
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            parser = _Forms()
            parser.feed(response.text)
            assert parser.forms, response.text[:500]
            action, fields = parser.forms[0]
            url, method = urljoin(url, action), "POST"
            if "password" in fields:
                data = {**fields, "username": username, "password": PASSWORD}
            else:  # the consent form: its "allow" input is the Authorize button, the other one is Cancel
                data = fields if consent else {name: value for name, value in fields.items() if name != "allow"}
        raise AssertionError("the provider never sent the browser back")


def authorize_params(url: str) -> dict:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
