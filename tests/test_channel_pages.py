"""The channel pages (/alerts/): Admins add and edit channels, see the delivery log and send a test; targets are
encrypted at rest and never shown; receivers' bodies are never shown."""

import pytest

FORM = {"name": "Ops", "kind": "webhook", "events": ["batch.failed", "batch.stuck"], "quiet_time_zone": "UTC",
        "min_interval_seconds": "0", "enabled": "on"}


def test_an_admin_adds_a_webhook_channel_whose_url_is_stored_encrypted(client, login, receiver, connection):
    from notifications.models import Channel

    login("admin")
    response = client.post("/alerts/new/", {**FORM, "target": receiver.url, "connections": [connection.pk],
                                            "metadata_match": "team=growth"})
    channel = Channel.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/alerts/{channel.pk}/"
    assert receiver.url not in channel.target_encrypted and channel.target == receiver.url
    assert channel.secret.startswith("whsec_") and channel.secret not in channel.secret_encrypted
    assert list(channel.connections.all()) == [connection] and channel.metadata_pairs() == [("team", "growth")]
    page = client.get(f"/alerts/{channel.pk}/").content.decode()
    assert receiver.url not in page and channel.secret in page  # the receiver needs the secret to verify


@pytest.mark.parametrize("target,error", [
    ("https://169.254.169.254/", "link-local address"), ("http://hooks.example.com/", "https://"), ("", "required")])
def test_a_channel_with_a_refused_target_is_not_added(client, login, target, error):
    from notifications.models import Channel

    login("admin")
    response = client.post("/alerts/new/", {**FORM, "target": target})
    assert response.status_code == 400 and error in response.content.decode() and not Channel.objects.exists()


def test_an_email_channel_takes_addresses(client, login):
    login("admin")
    assert client.post("/alerts/new/", {**FORM, "kind": "email", "target": "ops@example.com, nope"}).status_code == 400
    assert client.post("/alerts/new/", {**FORM, "kind": "email", "target": "ops@example.com, a@b.example"}).status_code == 302


def test_editing_without_a_target_keeps_the_stored_one(client, login, make_channel, receiver):
    channel = make_channel("slack", receiver.url)
    login("admin")
    response = client.post(f"/alerts/{channel.pk}/", {**FORM, "kind": "slack", "name": "Renamed", "target": ""})
    channel.refresh_from_db()
    assert response.status_code == 302 and channel.name == "Renamed" and channel.target == receiver.url


def test_send_test_shows_the_status_code_and_never_the_body(client, login, make_channel, receiver):
    channel = make_channel("webhook", receiver.url)
    receiver.status, receiver.body = 418, b"<h1>secret stack trace</h1>"
    login("admin")
    page = client.post(f"/alerts/{channel.pk}/test/", follow=True).content.decode()
    assert "Test message not sent: HTTP 418." in page
    assert "secret stack trace" not in page
    assert receiver.requests[0]["headers"]["webhook-id"] in {str(d.pk) for d in channel.deliveries.all()}
    log = client.get(f"/alerts/{channel.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert log.lstrip().startswith('<section class="card" id="delivery-log">')
    assert "channel.test" in log and "418" in log and "secret stack trace" not in log


def test_a_successful_test_reads_sent(client, login, make_channel, receiver):
    channel = make_channel("slack", receiver.url)
    login("admin")
    page = client.post(f"/alerts/{channel.pk}/test/", follow=True).content.decode()
    assert "Test message sent (HTTP 200)." in page and len(receiver.requests) == 1


def test_the_list_shows_channels_and_the_nav_links_it_for_admins_only(client, login, make_channel):
    make_channel("email", "a@example.com", name="Mail the team")
    login("admin")
    page = client.get("/alerts/").content.decode()
    assert "Mail the team" in page and 'href="/alerts/"' in page
    client.logout()
    login("operator")
    assert 'href="/alerts/"' not in client.get("/").content.decode()


def test_with_teams_an_admin_manages_only_channels_of_connections_they_see(client, login, two_teams, make_channel,
                                                                          connection, other_connection):
    mine = make_channel("email", "a@example.com", name="Red's", connections=[connection])
    theirs = make_channel("email", "a@example.com", name="Blue's", connections=[other_connection])
    everyone = make_channel("email", "a@example.com", name="Everything")
    login("admin", team="Red")
    page = client.get("/alerts/").content.decode()
    assert "Red&#x27;s" in page and "Blue&#x27;s" not in page and "Everything" not in page
    assert client.get(f"/alerts/{mine.pk}/").status_code == 200
    assert client.get(f"/alerts/{theirs.pk}/").status_code == 404
    assert client.get(f"/alerts/{everyone.pk}/").status_code == 404
    response = client.post("/alerts/new/", {**FORM, "kind": "email", "target": "a@example.com"})
    assert response.status_code == 400 and "Choose at least one connection" in response.content.decode()
    response = client.post("/alerts/new/", {**FORM, "kind": "email", "target": "a@example.com",
                                            "connections": [other_connection.pk]})
    assert response.status_code == 400  # not a choice for them


def test_deleting_a_channel_removes_its_deliveries(client, login, make_channel, receiver):
    from notifications.models import Channel, Delivery

    channel = make_channel("slack", receiver.url)
    login("admin")
    client.post(f"/alerts/{channel.pk}/test/")
    assert client.post(f"/alerts/{channel.pk}/delete/").status_code == 302
    assert not Channel.objects.exists() and not Delivery.objects.exists()


def test_with_teams_the_django_admin_shows_only_the_channels_events_and_deliveries_of_connections_they_see(
        client, login, two_teams, make_channel, connection, other_connection):
    from notifications.models import Delivery, Event

    mine = make_channel("email", "a@example.com", name="Red mail", connections=[connection])
    theirs = make_channel("email", "a@example.com", name="Blue mail", connections=[other_connection])
    make_channel("email", "a@example.com", name="Every connection")
    for n, (conn, channel) in enumerate([(connection, mine), (other_connection, theirs)]):
        event = Event.objects.create(kind="batch.failed", connection=conn, dedupe_key=f"admin-{n}",
                                     data={"batch_id": f"batch_of_{conn.slug}"})
        Delivery.objects.create(event=event, channel=channel, state="sent")
    login("admin", team="Red")
    channels = client.get("/admin/notifications/channel/").content.decode()
    assert "Red mail" in channels and "Blue mail" not in channels and "Every connection" not in channels
    events = client.get("/admin/notifications/event/").content.decode()
    assert "admin-0" in events and "admin-1" not in events
    deliveries = client.get("/admin/notifications/delivery/").content.decode()
    assert "Red mail" in deliveries and "Blue mail" not in deliveries
    assert client.get(f"/admin/notifications/channel/{theirs.pk}/change/").status_code in (302, 404)
