import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings
from hypothesis.database import DirectoryBasedExampleDatabase

from simulator import Clock, Simulator, SimulatorServer

# Property tests: a small "ci" profile when CI is set (CI's time budget), a larger "dev" one otherwise;
# HYPOTHESIS_PROFILE picks either. Fixtures are set up once per test, not per example, on purpose.
_HYPOTHESIS = {"deadline": None, "print_blob": True, "suppress_health_check": [HealthCheck.function_scoped_fixture],
               "database": DirectoryBasedExampleDatabase(Path(__file__).resolve().parent.parent / "var" / "hypothesis")}
hypothesis_settings.register_profile("ci", max_examples=25, **_HYPOTHESIS)
hypothesis_settings.register_profile("dev", max_examples=60, **_HYPOTHESIS)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

SIM_KEY = "sk-sim-test-0123456789abcdef"


@pytest.fixture
def sim_clock():
    return Clock(frozen=True)


@pytest.fixture
def simulator(sim_clock):
    """A real simulator on a free port, with a clock only the test moves."""
    server = SimulatorServer(Simulator(seed=7, speed=1.0, clock=sim_clock), api_key=SIM_KEY)
    with server:
        yield server


@pytest.fixture
def connection(db, request):
    """A stored Connection. It points at the simulator when the test uses `simulator` (directly or through
    another fixture); a store or page test gets no server, and a port where nothing listens."""
    from batches.models import Connection

    if "simulator" in request.fixturenames:
        base_url = request.getfixturevalue("simulator").url
    else:
        base_url = "http://127.0.0.1:1/v1"
    conn = Connection(name="Simulator", slug="sim", base_url=base_url, poll_interval=15)
    conn.set_api_key(SIM_KEY)
    conn.save()
    _seed_prices()
    return conn


def _seed_prices() -> None:
    """The price table as its migration fills it (the starter table), when a transactional test's flush emptied
    it: tests that store batches see the costs a fresh install sees."""
    import importlib

    from django.apps import apps

    from usage.models import ModelPrice

    if not ModelPrice.objects.exists():
        importlib.import_module("usage.migrations.0002_seed_prices_fill_rollup").seed_prices(apps, None)


# A webhook signing secret as OpenAI shows one: whsec_ and 32 random bytes in base64 (fixed for tests).
WEBHOOK_SECRET = "whsec_dGVzdC1vbmx5LXdlYmhvb2stc2VjcmV0LTAwMDAwMDA="


@pytest.fixture
def webhook_connection(connection):
    """`connection` ("sim") with WEBHOOK_SECRET as its webhook signing secret."""
    connection.set_webhook_secret(WEBHOOK_SECRET)
    connection.save()
    return connection


def signed_webhook(body: bytes, *, secret: str = WEBHOOK_SECRET, webhook_id: str = "msg_test_1", at=None) -> dict:
    """Standard Webhooks headers for `body` as the API sends them (signed with the standardwebhooks package),
    as Django test client extra arguments; `at` (a datetime) is the timestamp, now by default."""
    from datetime import datetime, timezone

    from standardwebhooks import Webhook

    at = at or datetime.now(tz=timezone.utc)
    return {"HTTP_WEBHOOK_ID": webhook_id, "HTTP_WEBHOOK_TIMESTAMP": str(int(at.timestamp())),
            "HTTP_WEBHOOK_SIGNATURE": Webhook(secret).sign(webhook_id, at, body.decode())}


ROLES = ("anonymous", "norole", "viewer", "operator", "admin")
PASSWORD = "pw-for-tests-only-123"


@pytest.fixture
def roles(db):
    """The Viewer/Operator/Admin groups. A migration creates them, but transactional tests flush the
    database afterwards, so later tests re-create them the same way."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import Group

    if Group.objects.filter(name__in=["Viewer", "Operator", "Admin"]).count() < 3:
        importlib.import_module("batches.migrations.0002_roles").create_roles(apps, None)
        importlib.import_module("teams.migrations.0002_admins_manage_teams").add_team_permissions(apps, None)
        importlib.import_module("batches.migrations.0013_archive_and_request_index").give_content_to_operators_and_admins(
            apps, None)
        importlib.import_module("batches.migrations.0015_submissions").give_submit_to_operators_and_admins(apps, None)
        importlib.import_module("notifications.migrations.0002_admins_manage_channels").give_channels_to_admins(
            apps, None)
        importlib.import_module("usage.migrations.0002_seed_prices_fill_rollup").give_prices_and_budgets_to_admins(
            apps, None)


@pytest.fixture
def login(roles, client):
    """login(role) logs the test client in as a fresh user of that role and returns the user (None if anonymous);
    login(role, team="Red") also puts them in that team, `username` names them when a test needs several."""
    from django.contrib.auth.models import Group, User

    from teams.models import Team

    def _login(role: str, team: str = "", username: str = ""):
        if role == "anonymous":
            return None
        user = User.objects.create_user(username or role, password=PASSWORD)  # the group is the role; no is_staff
        group = {"viewer": "Viewer", "operator": "Operator", "admin": "Admin"}.get(role)
        if group:
            user.groups.add(Group.objects.get(name=group))
        if team:
            user.teams.add(Team.objects.get(name=team))
        client.force_login(user)
        return user

    return _login


@pytest.fixture
def other_connection(connection):
    """A second connection, "other", on the same server as `connection` ("sim")."""
    from batches.models import Connection

    other = Connection(name="Other", slug="other", base_url=connection.base_url, poll_interval=15)
    other.set_api_key(SIM_KEY)
    other.save()
    return other


@pytest.fixture
def two_teams(roles, connection, other_connection):
    """Team Red may use "sim" up to operator, team Blue "other" up to viewer. Once they exist, users in
    neither team see no connection."""
    from teams.models import Team, TeamGrant

    red, blue = Team.objects.create(name="Red"), Team.objects.create(name="Blue")
    TeamGrant.objects.create(team=red, connection=connection, role="operator")
    TeamGrant.objects.create(team=blue, connection=other_connection, role="viewer")
    return red, blue


@pytest.fixture
def synced_batch(connection, simulator):
    """An in-progress batch that exists in the simulator and in our database."""
    from batches.models import Batch
    from batches.sync import sync_connection

    payload = simulator.inject_batch("in_progress", lines=400, fail_share=0.1)
    sync_connection(connection_id=connection.pk)
    return Batch.objects.get(batch_id=payload["id"])


@pytest.fixture
def lost_key(settings):
    """BATCHBOARD_ENCRYPTION_KEYS replaced by a key that never encrypted anything: stored API keys are unreadable.
    Returns the message Connection.api_key raises with."""
    from cryptography.fernet import Fernet

    from batches.models import KeyUnreadable, decrypt_secret, encrypt_secret

    stored = encrypt_secret("sk-encrypted-with-the-old-key")
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(KeyUnreadable) as unreadable:
        decrypt_secret(stored)
    return str(unreadable.value)


@pytest.fixture(autouse=True)
def _fresh_row_cache():
    """Rendered rows are cached per process; each test starts without them."""
    from django.core.cache import caches

    caches["template_fragments"].clear()


@pytest.fixture
def password_checks(monkeypatch):
    """Counts the real password checks (Django's check_password), whichever form or thread runs them."""
    import threading

    from django.contrib.auth.base_user import AbstractBaseUser

    checks = []
    lock = threading.Lock()
    check_password = AbstractBaseUser.check_password

    def counted(user, raw_password):
        with lock:
            checks.append(user.get_username())
        return check_password(user, raw_password)

    monkeypatch.setattr(AbstractBaseUser, "check_password", counted)
    return checks


@pytest.fixture(scope="module")
def browser():
    """One Chromium for a module of browser tests (each test opens its own context)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM inside Playwright's sync API
        with sync_playwright() as playwright:
            chromium = launch(playwright)
            yield chromium
            chromium.close()


# ----- the archive -------------------------------------------------------------------------------------------
@pytest.fixture
def archive_dir(settings, tmp_path):
    """The archive (the filesystem storage, as by default) in a temporary directory; returns its root."""
    root = tmp_path / "archive"
    settings.ARCHIVE_ROOT, settings.ARCHIVE_TMP_DIR = root, root / ".incoming"
    settings.STORAGES = {**settings.STORAGES, "archive": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": root, "directory_permissions_mode": 0o700, "file_permissions_mode": 0o600}}}
    return root


@pytest.fixture
def run_archive(db):
    """What beat and the archive queue's worker do: claim the copies due (at `now`, by default now) and run
    each. Returns {row id: what happened}."""
    from batches import archive

    def run(now=None) -> dict:
        return {pk: archive.copy_file(pk, claimed_until=claim) for pk, claim in archive.claim_due_files(now=now)}

    return run


@pytest.fixture
def see_batch_finish(connection, simulator):
    """see_batch_finish(**spec) injects a running batch into the simulator (spec as for inject_batch), stores it,
    lets 7 simulated hours pass and stores it again, finished: a batch Batchboard saw finishing."""
    from batches.sync import refresh_batch

    def see(**spec):
        payload = simulator.inject_batch("in_progress", **spec)
        refresh_batch(connection=connection, batch_id=payload["id"])
        simulator.advance(7 * 3600)
        batch, _ = refresh_batch(connection=connection, batch_id=payload["id"])
        assert batch.is_terminal
        return batch

    return see


@pytest.fixture
def finished_batch(see_batch_finish):
    """A batch Batchboard saw finishing: 400 requests, 10% failed, so it has an input, an output and an error
    file, each with a row due in the archive (ARCHIVE_FILES=all)."""
    batch = see_batch_finish(lines=400, fail_share=0.1)
    assert batch.status == "completed" and batch.output_file_id and batch.error_file_id
    return batch


def _queue_taker(name: str):
    """A function that takes the messages out of the test broker's queue `name`, as (task name, arguments)."""
    from dashboard.celery import app

    def take() -> list[tuple[str, list]]:
        taken = []
        with app.connection_for_write() as broker:
            queue = broker.SimpleQueue(name, no_ack=True)
            try:
                while True:
                    try:
                        message = queue.get(block=False)
                    except queue.Empty:
                        return taken
                    taken.append((message.headers["task"], message.payload[0]))
            finally:
                queue.close()

    return take


@pytest.fixture
def archive_queue():
    """The test broker's archive queue, emptied first; returns a function that takes the messages out of it, as
    (task name, arguments) pairs."""
    take = _queue_taker("batchboard-test-archive")
    take()
    yield take
    take()


@pytest.fixture
def task_queue():
    """The test broker's default queue (syncs, refreshes), as archive_queue."""
    take = _queue_taker("batchboard-test")
    take()
    yield take
    take()


@pytest.fixture
def archive_storage(archive_dir):
    """STORAGES["archive"] in a directory of this test's own."""
    from batches.archive import storage

    return storage()


@pytest.fixture
def archive_files(connection, simulator, archive_storage):
    """archive_files(batch): the batch's files streamed over HTTP from the simulator into the archive storage,
    each an ArchivedFile in state "stored" (what the archive copy task leaves)."""
    import hashlib

    import requests
    from django.core.files import File
    from django.utils import timezone

    from batches.models import ArchivedFile

    def _archive_files(batch):
        for kind in ("input", "output", "error"):
            file_id = batch.file_id(kind)
            if not file_id:
                continue
            with requests.get(f"{simulator.url}/files/{file_id}/content", stream=True, timeout=30,
                              headers={"Authorization": f"Bearer {SIM_KEY}"}) as response:
                response.raise_for_status()
                name = archive_storage.save(hashlib.sha256(file_id.encode()).hexdigest() + ".jsonl",
                                            File(response.raw))
            ArchivedFile.objects.update_or_create(batch=batch, kind=kind, defaults=dict(
                file_id=file_id, state=ArchivedFile.STORED, name=name, bytes=archive_storage.size(name),
                stored_at=timezone.now()))
        return batch

    return _archive_files


@pytest.fixture
def archived_batch(connection, simulator, archive_files):
    """archived_batch(status, **spec): a batch injected into the simulator (POST /_sim/batches fields), stored,
    and its files streamed over HTTP into the archive storage, each an ArchivedFile in state "stored"."""
    from batches.store import store_batch

    def _archived_batch(status: str = "completed", **spec):
        spec.setdefault("created_at", simulator.simulator.clock.now() - 3 * 86400)
        batch, _ = store_batch(connection, simulator.inject_batch(status, **spec))
        return archive_files(batch)

    return _archived_batch


@pytest.fixture
def failed_batch(archived_batch):
    """A completed batch of 60 requests, a fifth of them failed, archived and indexed: one to retry."""
    from batches.results import index_batch

    batch = archived_batch("completed", lines=60, fail_share=0.2, endpoint="/v1/chat/completions",
                           model="gpt-4o-mini", metadata={"description": "nightly eval", "team": "search"})
    index_batch(batch.pk)
    return batch


@pytest.fixture
def completed_batch(connection):
    """A completed chat batch of 6 requests, 2 of them failed, with its three file ids; nothing archived yet."""
    from batches.store import store_batch
    from tests import payloads

    return store_batch(connection, payloads.batch(
        id="batch_done", status="completed", output_file_id="file-out", error_file_id="file-err",
        completed_at=payloads.CREATED + 3600, request_counts={"total": 6, "completed": 4, "failed": 2}))[0]


# ----- alerts ------------------------------------------------------------------------------------------------
@pytest.fixture
def receiver():
    """A local HTTP receiver (tests/receiver.py) for Slack and webhook channels, on a free port."""
    from tests.receiver import Receiver

    with Receiver() as server:
        yield server


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server on localhost (aiosmtpd) that Django's SMTP backend sends to; returns the list of
    messages it received (email.message.Message)."""
    import socket
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(message_from_bytes(envelope.original_content))
            return "250 Message accepted for delivery"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False
    yield received
    controller.stop()


@pytest.fixture
def imported(connection):
    """`connection`, its first full walk complete: what it stores from now on alerts."""
    from django.utils import timezone

    connection.imported_at = connection.last_full_walk_at = connection.last_success_at = timezone.now()
    connection.save()
    return connection


@pytest.fixture
def make_channel(db):
    """make_channel(kind, target, events=[...], **fields): a stored channel (a webhook one gets a signing secret)."""
    from notifications.forms import new_signing_secret
    from notifications.models import EVENT_KINDS, Channel

    def make(kind: str, target: str, *, events=None, connections=(), **fields):
        channel = Channel(name=fields.pop("name", f"{kind} channel"), kind=kind,
                          events=list(EVENT_KINDS if events is None else events), **fields)
        channel.set_target(target)
        if kind == "webhook":
            channel.set_secret(new_signing_secret())
        channel.save()
        channel.connections.set(connections)
        return channel

    return make


# ----- single sign-on ----------------------------------------------------------------------------------------
# Provider groups as a team's identity provider might name them, and what they give here.
OIDC_GROUP_MAP = {
    "batch-admins": {"role": "Admin"},
    "batch-operators": {"role": "Operator", "teams": ["Red"]},
    "batch-viewers": {"role": "Viewer"},
    "blue-team": {"teams": ["Blue"]},
}


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory):
    """A real OpenID Connect provider (django-oauth-toolkit, tests/oidc_provider/) in a subprocess on a free port,
    with its own SQLite database, started once for the session."""
    from tests.oidc_provider import Provider

    with Provider(tmp_path_factory.mktemp("oidc-provider")) as provider:
        yield provider


@pytest.fixture
def oidc(oidc_provider, settings, roles):
    """Single sign-on on, pointed at the test provider: e-mail domain example.com, OIDC_GROUP_MAP above. The
    provider starts each test with no users and no misbehaviour; returns it."""
    from accounts import oidc as oidc_module

    oidc_provider.reset()
    oidc_module.forget_discovery()
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = oidc_provider.client_id, oidc_provider.client_secret
    settings.OIDC_SCOPES = "openid email profile"
    settings.OIDC_PROVIDER_NAME = "Test IdP"
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = ["example.com"]
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_GROUP_MAP = OIDC_GROUP_MAP
    yield oidc_provider
    oidc_module.forget_discovery()


@pytest.fixture
def sso_log_in(client, oidc):
    """sso_log_in(username) goes through single sign-on with the test client: our /oidc/authenticate/, the
    provider's log-in and consent (requests, as `browser` when given), and our callback. Returns the callback's
    response."""

    def _sso_log_in(username: str, *, next: str = "", browser=None, consent: bool = True):
        start = client.get("/oidc/authenticate/" + (f"?next={next}" if next else ""))
        assert start.status_code == 302 and start["Location"].startswith(oidc.issuer), start
        back = oidc.sign_in(start["Location"], username, browser=browser, consent=consent)
        assert back.startswith("http://testserver/oidc/callback/"), back
        return client.get(back.removeprefix("http://testserver"))

    return _sso_log_in


# ----- usage and spend ---------------------------------------------------------------------------------------
@pytest.fixture
def set_prices(db):
    """set_prices((model, valid_from, input, cached_input, output), ...): the price table is exactly these rows
    (USD per million tokens; the starter table is gone, and a flush by a browser test may have emptied it)."""
    from usage.models import ModelPrice

    def _set(*rows):
        ModelPrice.objects.all().delete()
        return [ModelPrice.objects.create(model=model, valid_from=valid_from, input=i, cached_input=c, output=o)
                for model, valid_from, i, c, o in rows]

    return _set


def unix(day, seconds: float = 0) -> int:
    """Unix seconds of a date's midnight (UTC), plus `seconds`."""
    from datetime import UTC, datetime, time

    return int(datetime.combine(day, time.min, tzinfo=UTC).timestamp() + seconds)


@pytest.fixture
def store_usage(db):
    """store_usage(connection, batch_id, day, **fields): a batch created on `day` (at 10:00 UTC) stored as a sync
    stores it; completed with 100 requests and no tokens unless told otherwise. Shortcuts: input, cached, output,
    reasoning (tokens), total/completed/failed (requests), team/project (metadata); other keys go into the
    payload as they are."""
    from batches.store import store_batch
    from tests import payloads

    def _store(connection, batch_id, day, *, input=0, cached=0, output=0, reasoning=0, total=100, completed=None,
               failed=0, team=None, project=None, observed_at=None, **payload):
        metadata = {key: value for key, value in (("team", team), ("project", project)) if value is not None}
        created = unix(day, 10 * 3600)
        fields = {"id": batch_id, "status": "completed", "created_at": created, "in_progress_at": created + 60,
                  "finalizing_at": created + 3600, "completed_at": created + 3900,
                  "request_counts": {"total": total, "completed": total - failed if completed is None else completed,
                                     "failed": failed},
                  "usage": {"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
                            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
                            "total_tokens": input + output},
                  "metadata": metadata or None, **payload}
        return store_batch(connection, payloads.batch(**fields), observed_at=observed_at)[0]

    return _store
