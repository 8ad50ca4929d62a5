"""Every page answers from the user's visible connections only (batches/selectors.py): rows, counts, health,
filters, polls, caches, and a property test over random users, teams and grants."""

import re

import pytest
from django.db import transaction
from hypothesis import given, strategies as st

from batches.store import store_batch
from teams.models import Team, TeamGrant
from tests import payloads
from tests.conftest import ROLES

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def batches(connection, other_connection):
    """Three batches of "sim" (two in progress) and two of "other" (completed); no file ids, so no API calls."""
    files = {"input_file_id": None}
    for i in range(3):
        store_batch(connection, payloads.batch(id=f"batch_sim_{i}", status="in_progress" if i else "validating", **files))
    for i in range(2):
        store_batch(other_connection, payloads.batch(id=f"batch_other_{i}", status="completed", **files))


def _ids(response) -> set[str]:
    return set(re.findall(r"batch_(?:sim|other)_\d", response.content.decode()))


def _cards(response) -> dict[str, int]:
    page = response.content.decode()
    return {status: int(count) for status, count in re.findall(
        r'status-(\w+)(?: active)?" href="[^"]*status=\w+"[^>]*>\s*<span class="stat-count">([\d,]+)<', page)}


def test_a_team_member_sees_only_their_connections_batches_counts_and_health(client, login, batches, two_teams):
    login("viewer", team="Red")
    response = client.get("/")
    page = response.content.decode()
    assert _ids(response) == {"batch_sim_0", "batch_sim_1", "batch_sim_2"}
    assert _cards(response)["in_progress"] == 2 and _cards(response)["completed"] == 0
    assert "3 batches" in page
    assert "<strong>Simulator</strong>" in page and "Other" not in page  # health rows and the filter's choices


def test_a_filter_or_search_naming_another_teams_batches_finds_nothing(client, login, batches, two_teams):
    login("viewer", team="Red")
    for query in ("connection=other", "q=batch_other", "status=completed", "sort=-tokens&page=2"):
        response = client.get(f"/?{query}")
        assert response.status_code == 200 and not _ids(response) & {"batch_other_0", "batch_other_1"}, query


def test_status_counts_are_counted_per_visible_connection_set(client, login, batches, two_teams):
    """The counts are cached per data version; two users with different connections must not share them."""
    login("viewer", team="Blue", username="blue")
    assert _cards(client.get("/"))["completed"] == 2
    client.logout()
    login("viewer", team="Red", username="red")
    assert _cards(client.get("/")) == {**dict.fromkeys(_cards(client.get("/")), 0), "validating": 1, "in_progress": 2}
    client.logout()
    login("viewer", team="", username="nobody")
    assert set(_cards(client.get("/")).values()) == {0}


def test_a_user_in_no_team_sees_no_connection_once_teams_exist_and_is_told_why(client, login, batches, two_teams):
    login("operator")
    response = client.get("/")
    assert not _ids(response) and "You are in no team that may see a connection" in response.content.decode()


def test_without_teams_every_viewer_still_sees_every_connection(client, login, batches):
    login("viewer")
    assert len(_ids(client.get("/"))) == 5


def test_a_revoked_grant_shows_on_the_next_poll(client, login, batches, two_teams):
    red, _ = two_teams
    login("viewer", team="Red")
    red.grants.create(connection=two_teams[1].grants.get().connection, role="viewer")
    fragment = client.get("/", **HX).content.decode()
    poll = re.search(r'hx-get="([^"]+)"', fragment).group(1).replace("&amp;", "&")
    assert client.get(poll, **HX).status_code == 204
    red.grants.filter(connection__slug="other").delete()
    response = client.get(poll, **HX)
    assert response.status_code == 200 and _ids(response) == {"batch_sim_0", "batch_sim_1", "batch_sim_2"}


def test_a_superuser_in_no_team_sees_everything(client, batches, two_teams, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="x"))
    assert len(_ids(client.get("/"))) == 5


# ----- the property: no page, fragment, download or count shows a batch of a connection the user cannot see --
BATCH_ROUTES = ("", "files/", "files/input/", "cancel/")
_grant = st.tuples(st.sampled_from(["sim", "other", None]), st.sampled_from(["viewer", "operator"]))
_team = st.tuples(st.lists(_grant, max_size=2), st.booleans())  # grants, and whether the user is a member


@given(role=st.sampled_from(ROLES[1:]), superuser=st.booleans(), teams=st.lists(_team, max_size=3),
       query=st.sampled_from(["", "?connection=other", "?connection=sim", "?q=batch_", "?status=completed",
                              "?status=in_progress&status=validating", "?sort=created"]))
def test_no_page_ever_shows_a_batch_of_a_connection_the_user_cannot_see(
        client, roles, batches, connection, other_connection, django_user_model, role, superuser, teams, query):
    from django.contrib.auth.models import Group

    connections = {"sim": connection, "other": other_connection}
    expected = {"sim": 3, "other": 2}
    with transaction.atomic():
        user = django_user_model.objects.create_user("someone", is_superuser=superuser)
        if role != "norole":
            user.groups.add(Group.objects.get(name=role.capitalize()))
        for n, (grants, member) in enumerate(teams):
            team = Team.objects.create(name=f"team {n}")
            for slug, ceiling in dict(grants).items():
                TeamGrant.objects.create(team=team, connection=connections.get(slug), role=ceiling)
            if member:
                team.members.add(user)
        # The oracle, written independently of the selectors.
        granted = {slug for grants, member in teams if member for slug, _ in grants}
        has_role = superuser or role != "norole"
        may_see = {slug for slug in connections
                   if has_role and (superuser or not teams or slug in granted or None in granted)}
        hidden = {f"batch_{slug}_{i}" for slug, n in expected.items() if slug not in may_see for i in range(n)}
        client.force_login(user)

        for headers in ({}, HX):
            response = client.get("/" + query, **headers)
            assert not _ids(response) & hidden
            if response.status_code == 200:
                visible_total = sum(n for slug, n in expected.items() if slug in may_see)
                assert sum(_cards(response).values()) == visible_total
        for slug, n in expected.items():
            for route in BATCH_ROUTES:
                response = client.get(f"/batches/{slug}/batch_{slug}_0/{route}")
                if slug not in may_see:
                    assert response.status_code in (403, 404) and not _ids(response), (slug, route)
                    assert response.status_code == 404 or role == "norole" and not superuser
        transaction.set_rollback(True)


def test_a_team_members_list_reads_their_grants_in_one_query(client, login, batches, two_teams,
                                                             django_assert_max_num_queries):
    login("viewer", team="Red")
    client.get("/?status=validating&q=batch")  # fills the status-count cache
    with django_assert_max_num_queries(9):  # as without teams (tests/test_batch_list.py)
        client.get("/?status=validating&q=batch")


# ----- review: ways out of a team ------------------------------------------------------------------------
def _red_admin(client, login, two_teams):
    admin_user = login("admin", team="Red", username="red-admin")
    return admin_user


def test_an_admin_cannot_reset_the_password_of_a_user_beyond_their_teams(client, login, batches, two_teams,
                                                                           django_user_model):
    """Today a Red Admin resets a Blue Operator's password, then logs in as them and sees Blue's batches."""
    from teams.models import Team

    blue = django_user_model.objects.create_user("blue-op", password="old-password-123")
    Team.objects.get(name="Blue").members.add(blue)
    _red_admin(client, login, two_teams)
    response = client.post(f"/admin/auth/user/{blue.pk}/password/",
                           {"password1": "taken-over-123!", "password2": "taken-over-123!", "usable_password": "true"})
    assert response.status_code == 403
    assert not django_user_model.objects.get(pk=blue.pk).check_password("taken-over-123!")


def test_an_admin_cannot_delete_the_last_team(client, login, batches, two_teams):
    """Today deleting the last team silently gives every user every connection."""
    from teams.models import Team

    Team.objects.exclude(name="Red").delete()
    _red_admin(client, login, two_teams)
    red = Team.objects.get(name="Red")
    client.post(f"/admin/teams/team/{red.pk}/delete/", {"post": "yes"})
    assert Team.objects.filter(pk=red.pk).exists()


def test_an_admin_with_a_viewer_grant_cannot_delete_or_change_the_connection(client, login, two_teams):
    """Today a viewer grant lets an Admin delete the connection (or re-key and repoint it)."""
    from batches.models import Connection
    from teams.models import TeamGrant

    red, _ = two_teams
    watched = Connection(name="Watched", slug="watched", base_url="http://127.0.0.1:9/v1")
    watched.set_api_key("sk-watched-1234")
    watched.save()
    TeamGrant.objects.create(team=red, connection=watched, role="viewer")
    _red_admin(client, login, two_teams)
    assert client.post(f"/admin/batches/connection/{watched.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Connection.objects.filter(pk=watched.pk).exists()
    page = client.get(f"/admin/batches/connection/{watched.pk}/change/")
    assert page.status_code == 200 and 'name="api_key"' not in page.content.decode()  # read-only
