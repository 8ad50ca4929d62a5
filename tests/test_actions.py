"""Cancel and refresh, as an Operator, against the simulator."""

import pytest

from batches.models import AuditEvent, Batch
from tests.htmlparts import out_of_band

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def operator(login):
    return login("operator")


def _url(batch, suffix=""):
    return f"/batches/{batch.connection.slug}/{batch.batch_id}/{suffix}"


def test_the_cancel_confirmation_says_what_will_happen(client, operator, synced_batch):
    page = client.get(_url(synced_batch, "cancel/"), **HX).content.decode()
    assert page.lstrip().startswith('<section id="cancel-confirm"')
    assert "up to 10 minutes" in page and "already finished are kept" in page


def test_cancel_through_htmx_shows_cancelling_at_once_and_is_audited(client, operator, synced_batch, simulator):
    response = client.post(_url(synced_batch, "cancel/"), **HX)
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="batch-status">cancelling' in page and "Cancel requested" in page
    swaps = out_of_band(page)  # nothing lands in the panel the form targets: it closes
    assert swaps["batch-head"] == "morph" and swaps["action-notice"] == "true"
    event = synced_batch.audit_events.get()
    assert (event.action, event.ok, event.username) == ("cancel", True, "operator")
    assert event.request_id.startswith("req_")
    simulator.advance(600)
    client.post(_url(synced_batch, "refresh/"), **HX)
    assert Batch.objects.get().status == "cancelled"


def test_a_double_cancel_sends_one_api_call(client, operator, synced_batch, simulator):
    client.post(_url(synced_batch, "cancel/"), **HX)
    client.post(_url(synced_batch, "cancel/"), **HX)
    assert simulator.stats()["by_endpoint"]["POST /v1/batches/{id}/cancel"] == 1
    assert AuditEvent.objects.filter(action="cancel").count() == 2


def test_a_second_cancel_is_information_not_a_success(client, operator, synced_batch):
    client.post(_url(synced_batch, "cancel/"), **HX)
    page = client.post(_url(synced_batch, "cancel/"), **HX).content.decode()
    assert '<p class="message info">Already cancelling; nothing sent again.</p>' in page


def test_an_api_refusal_is_shown_inline(client, operator, synced_batch, simulator):
    simulator.set_faults(next=1, kinds=["quota"])
    page = client.post(_url(synced_batch, "cancel/"), **HX).content.decode()
    assert "The API refused the cancel" in page and "insufficient_quota" in page
    assert synced_batch.audit_events.get().ok is False


def test_cancel_without_htmx_redirects_with_a_message(client, operator, synced_batch):
    response = client.post(_url(synced_batch, "cancel/"), follow=True)
    assert response.redirect_chain[-1][0] == _url(synced_batch)
    assert "Cancel requested" in response.content.decode()


def test_refresh_re_syncs_the_batch(client, operator, synced_batch, simulator):
    simulator.advance(3600 * 6)
    page = client.post(_url(synced_batch, "refresh/"), **HX).content.decode()
    assert "Refreshed: updated." in page
    assert Batch.objects.get().status != "in_progress"
    assert synced_batch.audit_events.get().action == "refresh"


@pytest.mark.parametrize("headers", [HX, {}], ids=["htmx", "plain"])
def test_cancel_with_an_unreadable_key_says_to_enter_it_again(client, operator, synced_batch, simulator,
                                                              lost_key, headers):
    response = client.post(_url(synced_batch, "cancel/"), follow=True, **headers)
    page = response.content.decode()
    assert response.status_code == 200
    assert lost_key in page and "the connection&#x27;s page in the admin" in page
    assert "POST /v1/batches/{id}/cancel" not in simulator.stats()["by_endpoint"]
    event = synced_batch.audit_events.get()
    assert (event.action, event.ok) == ("cancel", False) and lost_key in event.result


@pytest.mark.parametrize("headers", [HX, {}], ids=["htmx", "plain"])
def test_refresh_with_an_unreadable_key_says_to_enter_it_again(client, operator, synced_batch, lost_key, headers):
    response = client.post(_url(synced_batch, "refresh/"), follow=True, **headers)
    page = response.content.decode()
    assert response.status_code == 200
    assert lost_key in page and "the connection&#x27;s page in the admin" in page
    event = synced_batch.audit_events.get()
    assert (event.action, event.ok) == ("refresh", False) and lost_key in event.result


def test_the_cancel_page_opened_alone_posts_plainly_and_refuses_a_finished_batch(client, login, synced_batch):
    """The confirmation opened in its own tab: its form must post without the batch page around it."""
    login("operator")
    url = f"/batches/sim/{synced_batch.batch_id}/cancel/"
    page = client.get(url).content.decode()
    assert 'method="post"' in page and "hx-post" not in page
    assert 'hx-post' in client.get(url, HTTP_HX_REQUEST="true").content.decode()
    type(synced_batch).objects.filter(pk=synced_batch.pk).update(status="cancelled")
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].endswith(f"/{synced_batch.batch_id}/")
