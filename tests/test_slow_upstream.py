"""An upstream server that drip-feeds its files never takes the web tier down.

The app runs under gunicorn (one gthread worker, 4 threads) against the test database; the simulator sends every
answer one byte every 2 s. With 8 downloads and file panels in flight at all times, `/healthz` and the list
still answer within a second; the downloads are cut (or refused over the cap) and audited so.
"""

import re
import subprocess
import sys
import threading
import time

import pytest
import requests

from batches.models import AuditEvent
from batches.store import store_batch
from tests.conftest import PASSWORD
from tests.processes import ROOT, listening_address, stop_process, subprocess_env

# Shrunk so a drip is cut within about a second (the production defaults are in the README).
STREAM_SETTINGS = {"FILE_STREAM_MIN_BYTES_PER_SECOND": "1024", "FILE_STREAM_GRACE_SECONDS": "1",
                   "FILE_STREAM_STALL_SECONDS": "2", "FILE_STREAMS_PER_CONNECTION": "2"}


@pytest.fixture
def web(transactional_db):
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "dashboard.wsgi", "--worker-class", "gthread", "--workers", "1",
         "--threads", "4", "--bind", "127.0.0.1:0"],
        cwd=ROOT, env=subprocess_env(**STREAM_SETTINGS), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield listening_address(server)
    finally:
        stop_process(server)


def _logged_in(base: str, username: str) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{base}/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    session.post(f"{base}/login/", data={"csrfmiddlewaretoken": token, "username": username, "password": PASSWORD},
                 timeout=10)
    return session


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_pages_answer_within_a_second_while_8_drip_fed_requests_are_in_flight(
        web, simulator, sim_clock, connection, roles, django_user_model):
    from django.contrib.auth.models import Group

    payload = simulator.inject_batch("completed", lines=400, fail_share=0.3, created_at=sim_clock.now() - 3600)
    store_batch(connection, payload)
    operator = django_user_model.objects.create_user("operator", password=PASSWORD)
    operator.groups.add(Group.objects.get(name="Operator"))
    session = _logged_in(web, "operator")
    assert session.get(f"{web}/", timeout=10).status_code == 200
    assert requests.get(f"{web}/healthz", timeout=10).status_code == 200  # its first broker connection is slower
    simulator.set_faults(rate=1.0, kinds=["drip"], slow_seconds=2)

    batch = f"{web}/batches/sim/{payload['id']}/"
    targets = [batch + "files/input/", batch + "files/output/", batch + "files/error/", batch + "files/input/",
               batch + "files/", batch + "files/", batch + "files/", batch]
    stop = threading.Event()

    def keep_requesting(url):
        viewer = requests.Session()
        viewer.cookies.update(session.cookies)
        while not stop.is_set():
            try:
                viewer.get(url, headers={"HX-Request": "true"} if url.endswith("files/") else {}, timeout=30).close()
            except requests.RequestException:
                pass

    threads = [threading.Thread(target=keep_requesting, args=(url,), daemon=True) for url in targets]
    for thread in threads:
        thread.start()
    timings = []
    try:
        time.sleep(0.5)
        for _ in range(6):
            for url, client in ((f"{web}/healthz", requests), (f"{web}/", session)):
                started = time.monotonic()
                try:
                    status = client.get(url, timeout=5).status_code
                except requests.Timeout:
                    status = "timed out"
                timings.append((url.removeprefix(web), status, round(time.monotonic() - started, 2)))
            time.sleep(0.5)
    finally:
        stop.set()
        simulator.set_faults(rate=0)
    assert all(status == 200 and seconds < 1 for _, status, seconds in timings), timings
    downloads = list(AuditEvent.objects.filter(action="download").values_list("result", flat=True))
    assert any(": cut after " in result and "slower than 1024 bytes/s" in result for result in downloads), downloads
    assert any(result.startswith("Too many downloads from this connection") for result in downloads), downloads
