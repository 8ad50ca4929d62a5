"""Teams in the admin: Admins manage teams and grants within their own reach, superusers everywhere; every
grant, revoke and membership change is audited; and the admin itself shows a team-scoped Admin only their
teams' connections."""

import pytest

from batches.models import AuditEvent
from batches.store import store_batch
from teams.models import Team, TeamGrant
from tests import payloads

GRANTS, MEMBERS = "grants", "Team_members"
ACCESS_CHANGES = ("grant", "revoke", "member_add", "member_remove")


def _access_events() -> list[tuple[str, str, str, str]]:
    """The access changes audited, oldest first: (action, who, target, detail); log-ins are audited too."""
    return [(e.action, e.username, e.target, e.detail)
            for e in AuditEvent.objects.filter(action__in=ACCESS_CHANGES).order_by("pk")]


def _form(name: str, grants=(), members=()) -> dict:
    """The team form as the admin's add page posts it: grants as (connection or None, role), members as users."""
    data = {"name": name, "_save": "Save"}
    for prefix, rows in ((GRANTS, grants), (MEMBERS, members)):
        data.update({f"{prefix}-TOTAL_FORMS": len(rows), f"{prefix}-INITIAL_FORMS": 0,
                     f"{prefix}-MIN_NUM_FORMS": 0, f"{prefix}-MAX_NUM_FORMS": 1000})
    for i, (connection, role) in enumerate(grants):
        data.update({f"{GRANTS}-{i}-connection": connection.pk if connection else "", f"{GRANTS}-{i}-role": role})
    for i, user in enumerate(members):
        data[f"{MEMBERS}-{i}-user"] = user.pk
    return data


def test_an_admin_creates_a_team_with_a_grant_and_a_member_and_each_is_audited(client, login, connection):
    admin = login("admin")
    page = client.get("/admin/teams/team/add/").content.decode()
    assert f'name="{GRANTS}-TOTAL_FORMS"' in page and f'name="{MEMBERS}-TOTAL_FORMS"' in page
    response = client.post("/admin/teams/team/add/", _form("Research", [(connection, "operator")], [admin]))
    assert response.status_code == 302
    team = Team.objects.get(name="Research")
    assert list(team.grants.values_list("connection__slug", "role")) == [("sim", "operator")]
    assert list(team.members.all()) == [admin]
    assert _access_events() == [("grant", "admin", "team Research", "connection sim as operator"),
                                ("member_add", "admin", "admin", "joined team Research")]


@pytest.fixture
def scoped_admin(login, two_teams):
    """An Admin in team Red, which may use "sim" up to operator; team Blue has "other"."""
    return login("admin", team="Red")


def test_a_team_scoped_admin_is_offered_and_may_grant_only_what_they_see(client, scoped_admin, two_teams,
                                                                        other_connection, connection):
    page = client.get("/admin/teams/team/add/").content.decode()
    assert ">Simulator<" in page and ">Other<" not in page
    response = client.post("/admin/teams/team/add/", _form("Mine", [(other_connection, "viewer")], [scoped_admin]))
    assert response.status_code == 200 and not Team.objects.filter(name="Mine").exists()
    assert client.post("/admin/teams/team/add/", _form("Mine", [(connection, "operator")])).status_code == 302


def test_a_team_scoped_admin_cannot_grant_all_connections(client, scoped_admin):
    response = client.post("/admin/teams/team/add/", _form("Everything", [(None, "viewer")], [scoped_admin]))
    assert response.status_code == 200 and "beyond your own access" in response.content.decode()
    assert not Team.objects.filter(name="Everything").exists()


def test_an_admin_capped_at_viewer_cannot_grant_operator(client, login, two_teams, other_connection):
    login("admin", team="Blue")  # Blue may use "other" up to viewer
    response = client.post("/admin/teams/team/add/", _form("Louder", [(other_connection, "operator")]))
    assert response.status_code == 200 and "beyond your own access" in response.content.decode()
    assert client.post("/admin/teams/team/add/", _form("Quiet", [(other_connection, "viewer")])).status_code == 302


def test_a_team_scoped_admin_cannot_join_or_change_a_team_beyond_their_reach(client, scoped_admin, two_teams):
    _, blue = two_teams
    assert client.get(f"/admin/teams/team/{blue.pk}/change/").status_code == 200  # read only
    data = _form("Blue", members=[scoped_admin]) | {f"{GRANTS}-TOTAL_FORMS": 0}
    assert client.post(f"/admin/teams/team/{blue.pk}/change/", data).status_code == 403
    assert client.post(f"/admin/teams/team/{blue.pk}/delete/", {"post": "yes"}).status_code == 403
    assert not blue.members.exists() and blue.grants.exists()


def test_a_superuser_may_grant_anything(client, two_teams, other_connection, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="x"))
    assert client.post("/admin/teams/team/add/", _form("All", [(None, "operator")])).status_code == 302
    assert TeamGrant.objects.get(team__name="All").connection is None


def test_deleting_a_team_revokes_its_grants_audited(client, login, two_teams):
    red, _ = two_teams
    login("admin", team="Red")
    assert client.post(f"/admin/teams/team/{red.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Team.objects.filter(name="Red").exists()
    assert _access_events() == [("revoke", "admin", "team Red", "connection sim (was operator)")]


def test_the_admin_shows_a_team_scoped_admin_only_their_connections_batches_and_events(
        client, scoped_admin, two_teams, connection, other_connection):
    mine, _ = store_batch(connection, payloads.batch(id="batch_mine"))
    theirs, _ = store_batch(other_connection, payloads.batch(id="batch_theirs"))
    for batch in (mine, theirs):
        AuditEvent.objects.create(action="refresh", connection=batch.connection, batch=batch,
                                  batch_id_text=batch.batch_id)
    for url in ("/admin/batches/batch/", "/admin/batches/auditevent/", "/admin/batches/batchsnapshot/"):
        page = client.get(url).content.decode()
        assert "batch_mine" in page and "batch_theirs" not in page, url
    connections = client.get("/admin/batches/connection/").content.decode()
    assert "Simulator" in connections and ">Other<" not in connections
    assert client.get(f"/admin/batches/batch/{theirs.pk}/change/").status_code == 302  # "does not exist"
    assert client.get(f"/admin/batches/connection/{other_connection.pk}/change/").status_code == 302


def test_the_audit_export_of_a_team_scoped_admin_holds_only_their_connections_events(
        client, scoped_admin, two_teams, connection, other_connection):
    for conn, batch_id in ((connection, "batch_mine"), (other_connection, "batch_theirs")):
        batch, _ = store_batch(conn, payloads.batch(id=batch_id))
        AuditEvent.objects.create(action="refresh", connection=conn, batch=batch, batch_id_text=batch_id)
    response = client.get("/admin/batches/auditevent/export.csv")
    csv = b"".join(response.streaming_content).decode()
    assert response.status_code == 200 and "batch_mine" in csv and "batch_theirs" not in csv
