"""No SSRF (notifications/outbound.py): targets must be https:// and public, checked when a channel is saved and
again on the address each send connects to."""

import pytest

from tests.receiver import Receiver


@pytest.mark.parametrize("url,problem", [
    ("http://hooks.example.com/x", "must start with https://"),
    ("ftp://hooks.example.com/x", "must start with https://"),
    ("https://10.1.2.3/hook", "private address"),
    ("https://192.168.0.10/hook", "private address"),
    ("https://127.0.0.1/hook", "loopback address"),
    ("https://localhost:8443/hook", "loopback address"),
    ("https://[::1]/hook", "loopback address"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback address"),
    ("https://169.254.169.254/latest/meta-data", "link-local address"),
    ("https://[fe80::1]/hook", "link-local address"),
    ("https://0.0.0.0/hook", "unspecified address"),
    ("https://100.64.0.1/hook", "non-public address"),
    ("http://localhost:8000/hook", "must start with https://"),  # the test-only allowance is 127.0.0.1 alone
    ("https://no-such-host.invalid/hook", "does not resolve"),
    ("https:///hook", "not a valid URL"),
])
def test_a_target_that_is_not_a_public_https_url_is_refused_when_saved(url, problem):
    from notifications.outbound import url_problem

    assert problem in url_problem(url)


def test_a_public_https_address_is_accepted():
    from notifications.outbound import url_problem

    assert url_problem("https://8.8.8.8/hook") == ""


def test_plain_http_to_127_0_0_1_is_only_for_tests(settings):
    from notifications.outbound import url_problem

    assert url_problem("http://127.0.0.1:9/hook") == ""
    settings.ALERTS_ALLOW_LOCAL_RECEIVERS = False
    assert "https://" in url_problem("http://127.0.0.1:9/hook")


@pytest.mark.parametrize("target", ["https://localhost:{port}/hook", "https://127.0.0.1:{port}/hook",
                                    "https://169.254.169.254/hook", "https://10.0.0.1/hook"])
def test_a_stored_target_that_now_resolves_inside_is_refused_at_send_time_without_a_retry(
        imported, make_channel, target):
    """A target stored before (or resolving differently since): the send checks the address it connects to."""
    from batches.store import store_batch
    from notifications.models import Delivery
    from notifications.outbox import run_outbox
    from tests import payloads

    with Receiver() as receiver:
        port = receiver.server.server_address[1]
        make_channel("webhook", target.format(port=port), events=["batch.validating"])
        store_batch(imported, payloads.batch())
        run_outbox()
        assert receiver.requests == []
    delivery = Delivery.objects.get()
    assert delivery.state == "failed" and delivery.result.startswith("refused: ") and delivery.response_code is None


def test_plain_http_is_refused_at_send_time_without_the_test_setting(imported, make_channel, receiver, settings):
    from batches.store import store_batch
    from notifications.models import Delivery
    from notifications.outbox import run_outbox
    from tests import payloads

    make_channel("slack", receiver.url, events=["batch.validating"])
    settings.ALERTS_ALLOW_LOCAL_RECEIVERS = False
    store_batch(imported, payloads.batch())
    run_outbox()
    assert receiver.requests == [] and Delivery.objects.get().result == "refused: the URL must start with https://"


def test_redirects_are_not_followed(imported, make_channel, receiver):
    from batches.store import store_batch
    from notifications.models import Delivery
    from notifications.outbox import run_outbox
    from tests import payloads

    make_channel("slack", receiver.url, events=["batch.validating"])
    receiver.status = 302
    store_batch(imported, payloads.batch())
    run_outbox()
    assert len(receiver.requests) == 1 and Delivery.objects.get().result == "HTTP 302"
