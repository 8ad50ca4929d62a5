"""grant_access, revoke_access, add_to_team and remove_from_team: access as code, each change audited."""

import io

import pytest
from django.core.management import CommandError, call_command

from batches.models import AuditEvent, Connection
from teams.models import Team, TeamGrant


def _events() -> list[tuple[str, str, str, str]]:
    """The access changes audited, oldest first: (action, who, target, detail)."""
    return [(e.action, e.username, e.target, e.detail) for e in AuditEvent.objects.order_by("pk")]


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def research(connection):
    return connection


def test_grant_access_creates_the_team_and_grants_the_connection(research):
    output = _run("grant_access", "--team", "Research", "--connection", "sim", "--role", "operator")
    grant = TeamGrant.objects.get()
    assert (grant.team.name, grant.connection, grant.role) == ("Research", research, "operator")
    assert "Created team 'Research'" in output and "may use connection 'sim' as operator" in output
    assert _events() == [("grant", "manage.py", "team Research", "connection sim as operator")]
    assert AuditEvent.objects.get().connection == research


def test_granting_again_changes_the_role_and_an_unchanged_grant_is_not_audited_twice(research):
    _run("grant_access", "--team", "Research", "--connection", "sim", "--role", "operator")
    _run("grant_access", "--team", "Research", "--connection", "sim", "--role", "viewer")
    _run("grant_access", "--team", "Research", "--connection", "sim", "--role", "viewer")
    assert TeamGrant.objects.get().role == "viewer" and Team.objects.count() == 1
    assert [detail for *_, detail in _events()] == [
        "connection sim as operator", "connection sim as viewer (was operator)"]


def test_all_connections_is_one_grant_without_a_connection(research):
    output = _run("grant_access", "--team", "Ops", "--all-connections", "--role", "viewer")
    grant = TeamGrant.objects.get()
    assert grant.connection is None and grant.role == "viewer" and "may use every connection" in output
    assert _events() == [("grant", "manage.py", "team Ops", "all connections as viewer")]
    assert AuditEvent.objects.get().connection is None


def test_an_unknown_connection_is_an_error_and_creates_nothing(db):
    with pytest.raises(CommandError, match="No connection with slug 'nope'"):
        _run("grant_access", "--team", "Research", "--connection", "nope", "--role", "viewer")
    assert not Team.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize("target", [[], ["--connection", "sim", "--all-connections"]])
def test_exactly_one_of_connection_and_all_connections_is_required(research, target):
    with pytest.raises(CommandError):
        _run("grant_access", "--team", "Research", *target, "--role", "viewer")


def test_a_role_other_than_viewer_or_operator_is_refused(research):
    with pytest.raises(CommandError):
        _run("grant_access", "--team", "Research", "--connection", "sim", "--role", "admin")


def test_revoke_access_removes_the_grant_and_says_when_there_was_none(research):
    _run("grant_access", "--team", "Research", "--connection", "sim", "--role", "viewer")
    assert "may no longer use connection 'sim'" in _run("revoke_access", "--team", "Research", "--connection", "sim")
    assert not TeamGrant.objects.exists() and Team.objects.filter(name="Research").exists()
    assert "nothing to revoke" in _run("revoke_access", "--team", "Research", "--connection", "sim")
    assert [action for action, *_ in _events()] == ["grant", "revoke"]
    assert _events()[-1] == ("revoke", "manage.py", "team Research", "connection sim (was viewer)")


def test_revoke_access_of_an_unknown_team_is_an_error(research):
    with pytest.raises(CommandError, match="No team named 'Nobody'"):
        _run("revoke_access", "--team", "Nobody", "--connection", "sim")


def test_add_to_team_and_remove_from_team(research, django_user_model):
    django_user_model.objects.create_user("ada")
    _run("grant_access", "--team", "Research", "--all-connections", "--role", "viewer")
    assert "ada is now in team 'Research'" in _run("add_to_team", "ada", "Research")
    assert "already in team" in _run("add_to_team", "ada", "Research")
    assert list(Team.objects.get().members.values_list("username", flat=True)) == ["ada"]
    assert "no longer in team" in _run("remove_from_team", "ada", "Research")
    assert "was not in team" in _run("remove_from_team", "ada", "Research")
    assert not Team.objects.get().members.exists()
    assert _events()[1:] == [("member_add", "manage.py", "ada", "joined team Research"),
                             ("member_remove", "manage.py", "ada", "left team Research")]


@pytest.mark.parametrize("command", ["add_to_team", "remove_from_team"])
def test_membership_needs_an_existing_team_and_user(db, django_user_model, command):
    with pytest.raises(CommandError, match="No team named 'Research'"):
        _run(command, "ada", "Research")
    Team.objects.create(name="Research")
    with pytest.raises(CommandError, match="No user named 'ada'"):
        _run(command, "ada", "Research")


def test_deleting_a_connection_deletes_its_grants(research):
    _run("grant_access", "--team", "Research", "--connection", "sim", "--role", "viewer")
    Connection.objects.all().delete()
    assert not TeamGrant.objects.exists()
