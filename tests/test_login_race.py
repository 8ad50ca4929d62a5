"""Concurrent log-in attempts against a live server: the limit holds however many arrive at once."""

import re
import threading

import requests

from tests.conftest import PASSWORD

ATTEMPTS = 30


def test_thirty_concurrent_wrong_passwords_reach_the_password_check_at_most_limit_times(
        live_server, django_user_model, password_checks, settings):
    settings.LOGIN_FAILURE_LIMIT = 5
    django_user_model.objects.create_user("ana", password=PASSWORD)
    page = requests.get(live_server.url + "/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    start = threading.Barrier(ATTEMPTS)
    statuses = []

    def attempt():
        start.wait()
        for _ in range(3):  # the test server's listen backlog may reset a connection before the app sees it
            try:
                response = requests.post(live_server.url + "/login/", cookies=page.cookies, timeout=60, data={
                    "username": "ana", "password": "wrong", "csrfmiddlewaretoken": token})
            except requests.ConnectionError:
                continue
            statuses.append(response.status_code)
            return

    threads = [threading.Thread(target=attempt) for _ in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(statuses) == ATTEMPTS
    assert len(password_checks) <= 5, f"{len(password_checks)} password checks against a limit of 5"
    assert statuses.count(200) <= 5, f"{statuses.count(200)} attempts got through against a limit of 5"
    assert statuses.count(429) == ATTEMPTS - statuses.count(200)
