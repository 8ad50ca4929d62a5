"""Events (notifications/events.py): one per status a batch enters and per derived episode, fanned out into
exactly one delivery per matching channel; nothing from a first import."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests import payloads

NOW = timezone.now()


def _ts(delta: timedelta) -> int:
    return int((NOW + delta).timestamp())


def _store(connection, **fields):
    from batches.store import store_batch

    batch, _ = store_batch(connection, payloads.batch(**{"id": "batch_evt", "metadata": {"team": "growth"}, **fields}))
    return batch


def _transition(status: str):
    stamp = {"validating": "created_at", "in_progress": "in_progress_at", "finalizing": "finalizing_at",
             "completed": "completed_at", "failed": "failed_at", "expired": "expired_at",
             "cancelling": "cancelling_at", "cancelled": "cancelled_at"}[status]

    def make(connection):
        _store(connection, status="in_progress", created_at=_ts(-timedelta(minutes=9)),
               in_progress_at=_ts(-timedelta(minutes=8)), request_counts={"total": 10, "completed": 1, "failed": 0})
        if status != "in_progress":
            _store(connection, status=status, created_at=_ts(-timedelta(minutes=9)),
                   **{stamp: _ts(-timedelta(minutes=1))}, request_counts={"total": 10, "completed": 10, "failed": 0})
    return make


def _high_failure_rate(connection):
    _store(connection, status="in_progress", in_progress_at=_ts(-timedelta(minutes=8)))
    _store(connection, status="completed", completed_at=_ts(-timedelta(minutes=1)),
           request_counts={"total": 10, "completed": 5, "failed": 5})


def _stuck(connection):
    from notifications.events import derive_events

    _store(connection, status="finalizing", created_at=_ts(-timedelta(hours=5)),
           finalizing_at=_ts(-timedelta(hours=2)))
    derive_events()


def _expiring_soon(connection):
    from notifications.events import derive_events

    _store(connection, status="in_progress", created_at=_ts(-timedelta(hours=23)),
           in_progress_at=_ts(-timedelta(hours=22)), expires_at=_ts(timedelta(hours=1)),
           request_counts={"total": 100, "completed": 10, "failed": 0})
    derive_events()


def _failing(connection):
    from notifications.events import derive_events

    connection.consecutive_failures, connection.last_error = 3, "HTTP 503 from the API"
    connection.last_success_at = NOW - timedelta(hours=1)
    connection.save()
    derive_events()


def _recovered(connection):
    from notifications.events import derive_events

    _failing(connection)
    connection.consecutive_failures, connection.last_success_at = 0, timezone.now() + timedelta(seconds=1)
    connection.save()
    derive_events()


def _budget(share: float):
    """A team's monthly budget, then a batch of that team costing `share` of it (gpt-4o-mini: $0.075 per million
    input tokens with the batch discount; the budget is $1)."""
    def make(connection):
        from usage.budgets import check_budgets
        from usage.models import Budget

        Budget.objects.get_or_create(name="growth", defaults={"amount_usd": 1, "meta_key": "team",
                                                              "meta_value": "growth"})
        tokens = round(share / 0.075 * 1_000_000)
        _store(connection, status="completed", created_at=_ts(-timedelta(minutes=9)),
               completed_at=_ts(-timedelta(minutes=1)), request_counts={"total": 10, "completed": 10, "failed": 0},
               usage={"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens})
        check_budgets()
    return make


MAKERS = {f"batch.{s}": _transition(s) for s in ("in_progress", "finalizing", "completed", "failed", "expired",
                                                 "cancelling", "cancelled")}
MAKERS.update({"batch.high_failure_rate": _high_failure_rate, "batch.stuck": _stuck,
               "batch.expiring_soon": _expiring_soon, "connection.failing": _failing,
               "connection.recovered": _recovered, "budget.nearly_spent": _budget(0.85),
               "budget.spent": _budget(1.01)})


def _deliveries(kind):
    from notifications.models import Delivery

    return list(Delivery.objects.filter(event__kind=kind).values_list("channel__name", flat=True))


def test_every_event_kind_has_a_way_to_happen_here():
    from notifications.models import EVENT_KINDS

    assert set(MAKERS) | {"batch.validating"} == set(EVENT_KINDS)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_each_event_kind_creates_one_delivery_per_channel(imported, make_channel, kind):
    from notifications.outbox import run_outbox

    make_channel("email", "a@example.com", name="one")
    make_channel("email", "b@example.com", name="two")
    make_channel("email", "c@example.com", name="other events", events=["batch.validating"])
    MAKERS[kind](imported)
    MAKERS[kind](imported)  # seen again: the same transition or episode, no second event
    run_outbox()
    run_outbox()
    assert sorted(_deliveries(kind)) == ["one", "two"]


def test_a_new_batch_seen_after_the_import_is_a_validating_event(imported, make_channel):
    from notifications.outbox import run_outbox

    make_channel("email", "a@example.com")
    _store(imported, status="validating")
    run_outbox()
    assert _deliveries("batch.validating") == ["email channel"]


def test_a_first_import_and_its_history_never_alert(connection, simulator, make_channel, settings):
    from batches.sync import sync_connection
    from notifications.models import Event

    settings.SYNC_PAGE_SIZE = 5
    make_channel("email", "a@example.com")
    for status in ("failed", "expired", "completed", "cancelled") * 3:
        simulator.inject_batch(status, lines=10, fail_share=0.5)
    running = simulator.inject_batch("in_progress", lines=50, fail_share=0.5)
    sync_connection(connection_id=connection.pk)
    connection.refresh_from_db()
    assert connection.imported_at is not None
    assert not Event.objects.exists()

    simulator.advance(7 * 3600)  # the running batch finishes, with half of its requests failed
    sync_connection(connection_id=connection.pk, full=True)
    assert set(Event.objects.values_list("kind", "batch__batch_id")) == {
        ("batch.completed", running["id"]), ("batch.high_failure_rate", running["id"])}


def test_changes_stored_while_an_import_is_under_way_never_alert(connection):
    """An import spread over cycles: the connection has synced, its walk goes on, imported_at is still empty."""
    from notifications.models import Event

    connection.last_success_at, connection.walk_cursor = NOW, "batch_somewhere"
    connection.save()
    _transition("failed")(connection)
    _high_failure_rate(connection)
    assert connection.is_importing and not Event.objects.exists()


def test_derived_events_wait_for_the_import(connection, make_channel):
    from notifications.events import derive_events

    _store(connection, status="finalizing", created_at=_ts(-timedelta(hours=5)), finalizing_at=_ts(-timedelta(hours=2)))
    connection.consecutive_failures, connection.last_success_at = 2, NOW - timedelta(hours=1)
    connection.save()
    assert derive_events() == 0


def test_a_connection_failing_again_is_a_new_episode(imported):
    from notifications.events import derive_events
    from notifications.models import Event

    _recovered(imported)
    imported.consecutive_failures = 1
    imported.last_success_at = timezone.now() - timedelta(hours=2)
    imported.save()
    derive_events()
    assert list(Event.objects.order_by("pk").values_list("kind", flat=True)) == [
        "connection.failing", "connection.recovered", "connection.failing"]


def test_rules_pick_the_channels(imported, other_connection, make_channel):
    from notifications.outbox import run_outbox

    make_channel("email", "a@example.com", name="growth", metadata_match="team=growth")
    make_channel("email", "a@example.com", name="search", metadata_match="team=search")
    make_channel("email", "a@example.com", name="other only", connections=[other_connection])
    make_channel("email", "a@example.com", name="sim only", connections=[imported])
    make_channel("email", "a@example.com", name="off", enabled=False)
    _transition("failed")(imported)
    run_outbox()
    assert sorted(_deliveries("batch.failed")) == ["growth", "sim only"]


def test_a_minimum_interval_skips_a_batchs_further_messages_but_never_how_it_ended(imported, make_channel):
    from notifications.models import Delivery
    from notifications.outbox import run_outbox

    make_channel("email", "a@example.com", min_interval_seconds=3600)
    for status in ("in_progress", "finalizing"):
        _store(imported, status=status, in_progress_at=_ts(-timedelta(minutes=5)),
               **({"finalizing_at": _ts(-timedelta(minutes=1))} if status == "finalizing" else {}))
        run_outbox()
    _store(imported, status="completed", completed_at=_ts(timedelta(0)), finalizing_at=_ts(-timedelta(minutes=1)),
           in_progress_at=_ts(-timedelta(minutes=5)))
    run_outbox()
    states = dict(Delivery.objects.values_list("event__kind", "state"))
    assert states == {"batch.in_progress": "sent", "batch.finalizing": "skipped", "batch.completed": "sent"}


def test_quiet_hours_hold_a_message_until_they_end(imported, make_channel):
    from datetime import time

    from notifications.models import Delivery
    from notifications.outbox import fan_out_one_event

    now = timezone.now().replace(hour=3, minute=0, second=0, microsecond=0)
    make_channel("email", "a@example.com", quiet_start=time(22), quiet_end=time(7), quiet_time_zone="UTC")
    _transition("failed")(imported)
    while fan_out_one_event(now=now):
        pass
    delivery = Delivery.objects.get(event__kind="batch.failed")
    assert delivery.state == "pending" and delivery.next_attempt_at == now.replace(hour=7)


def test_a_broken_hook_never_breaks_a_sync(imported, make_channel, settings):
    """A setting the event needs is missing: the batch is stored all the same, the event lost and logged."""
    from batches.models import Batch

    del settings.BATCHBOARD_BASE_URL
    batch = _store(imported, status="validating")
    assert Batch.objects.filter(pk=batch.pk).exists()


def test_stuck_and_expiring_batches_beyond_one_run_are_seen_by_the_next(imported, monkeypatch):
    """Each run looks at DERIVE_LIMIT batches, oldest first, leaving those already told about: none is starved."""
    from notifications import events
    from notifications.models import Event

    monkeypatch.setattr(events, "DERIVE_LIMIT", 1)
    for n in range(3):
        _store(imported, id=f"batch_stuck_{n}", status="finalizing", created_at=_ts(-timedelta(hours=5)),
               finalizing_at=_ts(-timedelta(hours=2, minutes=n)))
        _store(imported, id=f"batch_expiring_{n}", status="in_progress", created_at=_ts(-timedelta(hours=23)),
               in_progress_at=_ts(-timedelta(hours=22)), expires_at=_ts(timedelta(minutes=30 + n)),
               request_counts={"total": 100, "completed": 10, "failed": 0})
    for _ in range(3):
        events.derive_events()
    assert Event.objects.filter(kind="batch.stuck").count() == 3
    assert Event.objects.filter(kind="batch.expiring_soon").count() == 3
