"""/access/: Admins see who has access to what, per connection and per user, with each user's last log-in."""

import re
from datetime import datetime, timezone

import pytest
from django.contrib.auth.models import Group

from teams.models import Team, TeamGrant


def _by_user(page: str) -> str:
    return page[page.index("<h2>By user</h2>"):]


def _by_connection(page: str, name: str) -> str:
    section = page[page.index(f"<h3>{name} <"):page.index("<h2>By user</h2>")]
    return section.split("<h3>")[1]


def _row(page: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell starts with `first_cell`, tags stripped."""
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if cells and cells[0].startswith(first_cell):
            return cells
    return []


@pytest.fixture
def people(roles, two_teams, django_user_model):
    """ada: Operator in Red; bob: Operator in Blue (capped at viewer); cy: Viewer in no team."""
    red, blue = two_teams
    made = {}
    for name, role, team in (("ada", "Operator", red), ("bob", "Operator", blue), ("cy", "Viewer", None)):
        made[name] = django_user_model.objects.create_user(name)
        made[name].groups.add(Group.objects.get(name=role))
        if team:
            team.members.add(made[name])
    made["ada"].last_login = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
    made["ada"].save()
    return made


def test_it_lists_per_user_their_roles_teams_access_and_last_log_in(client, login, people):
    login("admin", team="Red")
    page = _by_user(client.get("/access/").content.decode())
    assert _row(page, "ada") == ["ada", "Operator", "Red", "sim: operator", "2026-03-01 09:30 UTC"]
    assert _row(page, "bob")[1:4] == ["Operator", "Blue", "none"]  # "other" is not the reader's to see
    assert _row(page, "cy")[2:] == ["—", "none", "never"]


def test_it_lists_per_connection_who_may_do_what_through_which_team(client, login, people, django_user_model):
    django_user_model.objects.create_superuser("root", password="x")
    client.force_login(django_user_model.objects.get(username="root"))
    page = client.get("/access/").content.decode()
    other = _by_connection(page, "Other")
    assert _row(other, "bob") == ["bob", "viewer", "Blue", "never"]
    assert _row(other, "root")[:3] == ["root", "operator", "superuser"]
    assert not _row(other, "ada") and not _row(other, "cy")
    assert "Blue (up to viewer)" in other


def test_a_team_of_all_connections_reads_as_such(client, login, people):
    everyone = Team.objects.create(name="Everyone")
    TeamGrant.objects.create(team=everyone, connection=None, role="viewer")
    everyone.members.add(people["cy"])
    login("admin", team="Everyone")
    assert _row(_by_user(client.get("/access/").content.decode()), "cy")[2:4] == ["Everyone", "all connections: viewer"]


def test_without_teams_it_says_everyone_with_a_role_sees_everything(client, login, connection, roles):
    login("admin")
    page = client.get("/access/").content.decode()
    assert "No teams are defined: every user with a role sees every connection" in page
    assert _row(_by_user(page), "admin")[1:4] == ["Admin", "—", "all connections: operator"]
    assert _row(_by_connection(page, "Simulator"), "admin")[1:3] == ["operator", "no teams are defined"]


def test_the_header_links_to_it_for_admins_only(client, login, roles):
    login("admin", username="boss")
    assert 'href="/access/"' in client.get("/account/").content.decode()
    client.logout()
    login("operator")
    assert 'href="/access/"' not in client.get("/account/").content.decode()


def test_its_query_count_does_not_grow_with_users(client, login, people, django_user_model,
                                                  django_assert_max_num_queries):
    login("admin", team="Red")
    with django_assert_max_num_queries(16):
        client.get("/access/")
    for i in range(10):
        django_user_model.objects.create_user(f"extra{i}").groups.add(Group.objects.get(name="Viewer"))
    with django_assert_max_num_queries(16):
        client.get("/access/")
