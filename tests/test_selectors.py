"""batches/selectors.py: roles say what, team grants say where, and with no team at all nothing changes."""

import pytest

from batches import selectors
from batches.store import store_batch
from teams.models import Team, TeamGrant
from tests import payloads


@pytest.fixture
def batches(connection, other_connection):
    return (store_batch(connection, payloads.batch(id="batch_sim"))[0],
            store_batch(other_connection, payloads.batch(id="batch_other"))[0])


def _user(django_user_model, role: str, *teams, superuser=False):
    from django.contrib.auth.models import Group

    name = f"{role}-{'-'.join(t.name for t in teams)}-{django_user_model.objects.count()}"
    user = django_user_model.objects.create_user(name, is_superuser=superuser)
    if role != "norole":
        user.groups.add(Group.objects.get(name=role.capitalize()))
    user.teams.add(*teams)
    return type(user).objects.get(pk=user.pk)  # a fresh object: no cached permissions or scope


def _visible(user) -> tuple[list, list]:
    return (sorted(selectors.visible_connections(user).values_list("slug", flat=True)),
            sorted(selectors.visible_batches(user).values_list("batch_id", flat=True)))


def test_with_no_team_at_all_every_role_sees_every_connection(roles, batches, django_user_model):
    for role in ("viewer", "operator", "admin"):
        user = _user(django_user_model, role)
        assert _visible(user) == (["other", "sim"], ["batch_other", "batch_sim"])
        assert selectors.rights(user, batches[1].connection)["view"]
    assert _visible(_user(django_user_model, "norole")) == ([], [])


def test_once_a_team_exists_a_user_sees_only_their_teams_connections(roles, batches, two_teams, django_user_model):
    red, blue = two_teams
    assert _visible(_user(django_user_model, "viewer", red)) == (["sim"], ["batch_sim"])
    assert _visible(_user(django_user_model, "viewer", blue)) == (["other"], ["batch_other"])
    assert _visible(_user(django_user_model, "viewer", red, blue)) == (["other", "sim"], ["batch_other", "batch_sim"])
    assert _visible(_user(django_user_model, "admin")) == ([], [])  # in no team: nothing


def test_a_role_without_view_sees_nothing_whatever_the_grant(roles, batches, two_teams, django_user_model):
    assert _visible(_user(django_user_model, "norole", *two_teams)) == ([], [])


def test_rights_are_the_role_capped_by_the_best_grant(roles, batches, two_teams, django_user_model):
    red, blue = two_teams
    sim, other = batches[0].connection, batches[1].connection
    everything = {"view": True, "cancel": True, "download": True, "refresh": True, "content": True, "submit": True}
    read_only = {"view": True, "cancel": False, "download": False, "refresh": False, "content": False, "submit": False}
    nothing = dict.fromkeys(everything, False)
    operator = _user(django_user_model, "operator", red, blue)
    assert selectors.rights(operator, sim) == everything and selectors.rights(operator, other) == read_only
    viewer = _user(django_user_model, "viewer", red)
    assert selectors.rights(viewer, sim) == read_only and selectors.rights(viewer, other) == nothing
    TeamGrant.objects.create(team=red, connection=other, role="operator")  # the best grant wins
    assert selectors.rights(_user(django_user_model, "operator", red, blue), other) == everything


def test_a_team_with_all_connections_sees_present_and_future_connections(roles, batches, two_teams, connection,
                                                                         django_user_model):
    from batches.models import Connection

    everyone = Team.objects.create(name="Everyone")
    TeamGrant.objects.create(team=everyone, connection=None, role="viewer")
    user = _user(django_user_model, "operator", everyone)
    Connection.objects.create(name="New", slug="new", base_url=connection.base_url)
    assert _visible(user) == (["new", "other", "sim"], ["batch_other", "batch_sim"])
    assert selectors.rights(user, connection) == {"view": True, "cancel": False, "download": False, "refresh": False,
                                                      "content": False, "submit": False}


def test_a_superuser_sees_everything_in_no_team(roles, batches, two_teams, django_user_model):
    user = _user(django_user_model, "norole", superuser=True)
    assert _visible(user) == (["other", "sim"], ["batch_other", "batch_sim"])
    assert all(selectors.rights(user, batches[1].connection).values())


def test_an_inactive_user_sees_nothing(roles, batches, django_user_model):
    user = _user(django_user_model, "viewer")
    user.is_active = False
    assert _visible(user) == ([], [])


def test_audit_events_follow_the_visible_connections(roles, batches, two_teams, django_user_model):
    from batches.models import AuditEvent

    for batch in batches:
        AuditEvent.objects.create(action="cancel", connection=batch.connection, batch=batch, batch_id_text=batch.batch_id)
    AuditEvent.objects.create(action="grant", detail="team Red: all connections as viewer")
    user = _user(django_user_model, "viewer", two_teams[0])
    assert sorted(selectors.visible_audit_events(user).values_list("batch_id_text", flat=True)) == ["", "batch_sim"]


def test_the_scope_is_read_once_per_user_object(roles, batches, two_teams, django_user_model,
                                                django_assert_num_queries):
    user = _user(django_user_model, "viewer", two_teams[0])
    selectors.scope(user)
    with django_assert_num_queries(0):
        selectors.scope(user)
