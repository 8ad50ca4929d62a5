"""Timing baselines: percentiles from the rollup's log buckets, baselines from stored transitions, and the ETA
and "stuck" rules that use them once a connection has enough history (the fixed rules before)."""

import math
import random
import re
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from notifications.events import derive_events
from notifications.models import Event
from usage import baselines
from usage.rollup import bucket_bounds, bucket_of


def _exact(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


@pytest.mark.parametrize("seed", range(8))
def test_a_percentile_is_within_one_bucket_of_the_exact_value(seed):
    rng = random.Random(seed)
    durations = [rng.lognormvariate(rng.uniform(3, 9), rng.uniform(0.1, 1.5)) + 1 for _ in range(rng.randint(1, 400))]
    histogram = Counter(bucket_of(d) for d in durations)
    width = bucket_bounds(10)[1] / bucket_bounds(10)[0]  # 2^(1/4): every bucket's ratio
    for q in (50, 90, 95, 99):
        estimate, exact = baselines.percentile(histogram, q), _exact(durations, q)
        assert 1 / width <= estimate / exact <= width, (q, estimate, exact)


def test_a_percentile_of_nothing_is_none():
    assert baselines.percentile({}, 50) is None and baselines.percentile({3: 0}, 95) is None


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def history(connection, store_usage, settings, now):
    """history(n, validating=, in_progress=, finalizing=): n completed gpt-4o-mini chat batches of the last days,
    each phase taking about the seconds given (±10%, spread evenly); USAGE_BASELINE_MIN_BATCHES is 5."""
    settings.USAGE_BASELINE_MIN_BATCHES = 5

    def make(n: int, *, validating: float = 60, in_progress: float = 3600, finalizing: float = 300,
             endpoint: str = "/v1/chat/completions"):
        for i in range(n):
            spread = 0.9 + 0.2 * i / max(n - 1, 1)
            created = int((now - timedelta(days=2, minutes=i)).timestamp())
            started = created + int(validating * spread)
            finalizing_at = started + int(in_progress * spread)
            store_usage(connection, f"batch_history_{endpoint[-3:]}_{i}", now.date(), endpoint=endpoint,
                        created_at=created, in_progress_at=started, finalizing_at=finalizing_at,
                        completed_at=finalizing_at + int(finalizing * spread))

    return make


def test_baselines_come_from_the_stored_transitions_of_the_connection_model_and_endpoint(
        connection, history, store_usage, now):
    history(6, validating=60, in_progress=3600, finalizing=300)
    history(6, validating=5, in_progress=10, finalizing=5, endpoint="/v1/embeddings")  # another endpoint: apart
    running = store_usage(connection, "batch_running", now.date(), status="in_progress", completed_at=None,
                          finalizing_at=None, created_at=int(now.timestamp()) - 660,
                          in_progress_at=int(now.timestamp()) - 600)
    found = baselines.for_batch(running, today=now.date())
    for phase, seconds in (("validating", 60), ("in_progress", 3600), ("finalizing", 300), ("end_to_end", 3960)):
        assert 0.8 * seconds <= found[phase]["p50"] <= 1.2 * seconds, phase
        assert found[phase]["p50"] <= found[phase]["p95"] <= 1.1 * 1.2 * seconds, phase
    assert found["in_progress"]["n"] == 6 and found["validating"]["n"] == 7  # the running batch was validated too
    assert "cancelling" not in found


def test_too_little_history_gives_no_baseline(connection, history, store_usage, now, settings):
    history(4)
    running = store_usage(connection, "batch_running", now.date(), status="in_progress", completed_at=None,
                          finalizing_at=None)
    assert "in_progress" not in baselines.for_batch(running, today=now.date())


def _running(store_usage, connection, now):
    """An in-progress batch of 100 requests, started 10 minutes ago, seen at 10 and (5 minutes later) at 40 done:
    fast enough for a naive ETA."""
    start = int(now.timestamp()) - 600
    fields = dict(status="in_progress", created_at=start - 100, in_progress_at=start, finalizing_at=None,
                  completed_at=None)
    store_usage(connection, "batch_running", now.date(), completed=10, observed_at=now - timedelta(minutes=5),
                **fields)
    return store_usage(connection, "batch_running", now.date(), completed=40, observed_at=now, **fields)


def _eta(client) -> tuple[str, datetime]:
    page = client.get("/batches/sim/batch_running/").content.decode()
    found = re.search(r'<span id="eta">(.*?)</span>\s*(?:<span|</p>|$)', page, re.S)
    assert found, "no ETA on the page"
    at = re.search(r'datetime="([^"]+)"', found.group(1)).group(1)
    return re.sub(r"<[^>]+>", "", found.group(1)), datetime.fromisoformat(at)


def test_the_eta_is_the_typical_remaining_time_once_there_is_history(client, login, connection, history,
                                                                      store_usage, now):
    history(6, in_progress=3600, finalizing=300)
    _running(store_usage, connection, now)
    login("viewer")
    text, at = _eta(client)
    assert "typical for gpt-4o-mini on this connection, from 6 batches" in text and "naive" not in text
    # started 600 s ago, typically 3,600 s in progress and then 300 s finalizing: about 3,300 s from now
    assert now + timedelta(seconds=0.8 * 3300) <= at <= now + timedelta(seconds=1.2 * 3300 + 60)


def test_the_eta_is_the_naive_one_without_enough_history(client, login, connection, history, store_usage, now,
                                                          settings):
    history(6, in_progress=3600, finalizing=300)
    settings.USAGE_BASELINE_MIN_BATCHES = 7
    _running(store_usage, connection, now)
    login("viewer")
    text, at = _eta(client)
    assert "naive: at the current rate" in text and "typical" not in text
    # 30 requests in 5 minutes, 60 to go: about 10 minutes
    assert now + timedelta(minutes=9) <= at <= now + timedelta(minutes=11, seconds=30)


def _finalizing(store_usage, connection, now, batch_id: str, seconds: int):
    at = int(now.timestamp()) - seconds
    return store_usage(connection, batch_id, now.date(), status="finalizing", created_at=at - 4000,
                       in_progress_at=at - 3900, finalizing_at=at, completed_at=None)


def _hint(client, batch_id: str) -> str | None:
    found = re.search(r'id="stuck-hint">(.*?)</span>', client.get(f"/batches/sim/{batch_id}/").content.decode(),
                      re.S)
    return found and found.group(1)


def _stuck_events(now) -> set[str]:
    derive_events(now=now)
    return {event.data["batch_id"] for event in Event.objects.filter(kind="batch.stuck")}


@pytest.fixture
def viewer(login, imported):
    return login("viewer")


def test_a_batch_finalizing_longer_than_its_p95_is_stuck_before_the_fixed_threshold(
        client, viewer, connection, history, store_usage, now, settings):
    settings.STUCK_AFTER_SECONDS = {**settings.STUCK_AFTER_SECONDS, "finalizing": 3600}
    history(6, finalizing=900)
    _finalizing(store_usage, connection, now, "batch_slow", 1500)
    _finalizing(store_usage, connection, now, "batch_usual", 700)  # over the 600 s floor, under the p95
    assert "the p95 of 6 earlier gpt-4o-mini batches on this connection" in _hint(client, "batch_slow")
    assert _hint(client, "batch_usual") is None
    assert _stuck_events(now) == {"batch_slow"}


def test_a_batch_under_its_p95_is_not_stuck_though_over_the_fixed_threshold(
        client, viewer, connection, history, store_usage, now, settings):
    settings.STUCK_AFTER_SECONDS = {**settings.STUCK_AFTER_SECONDS, "finalizing": 3600}
    history(6, finalizing=7200)  # this model usually finalizes for two hours: an hour and a half is normal
    _finalizing(store_usage, connection, now, "batch_usual", 5400)
    assert _hint(client, "batch_usual") is None
    assert _stuck_events(now) == set()


def test_a_baseline_never_calls_a_batch_stuck_before_the_floor(
        client, viewer, connection, history, store_usage, now, settings):
    settings.STUCK_BASELINE_FLOOR_SECONDS = 600
    history(6, finalizing=60)
    _finalizing(store_usage, connection, now, "batch_early", 400)
    _finalizing(store_usage, connection, now, "batch_late", 700)
    assert _hint(client, "batch_early") is None
    assert "longer than 10m 00s: the p95 of 6 earlier gpt-4o-mini batches on this connection is" in _hint(
        client, "batch_late") and "none is called stuck sooner" in _hint(client, "batch_late")
    assert _stuck_events(now) == {"batch_late"}


def test_without_history_the_fixed_threshold_applies(client, viewer, connection, store_usage, now, settings):
    settings.STUCK_AFTER_SECONDS = {**settings.STUCK_AFTER_SECONDS, "finalizing": 3600}
    _finalizing(store_usage, connection, now, "batch_stuck", 4000)
    _finalizing(store_usage, connection, now, "batch_fine", 3000)
    assert ("longer than the 1h 00m allowed without history (too few earlier gpt-4o-mini batches on this "
            "connection to know what is usual)") in _hint(client, "batch_stuck")
    assert _hint(client, "batch_fine") is None
    assert _stuck_events(now) == {"batch_stuck"}


def test_a_batch_later_than_typical_says_so_instead_of_moving_its_eta(client, login, connection, history,
                                                                      store_usage, now):
    history(6, in_progress=600, finalizing=300)
    start = int(now.timestamp()) - 1200  # twenty minutes in progress; the p50 is about ten
    store_usage(connection, "batch_running", now.date(), status="in_progress", created_at=start - 100,
                in_progress_at=start, finalizing_at=None, completed_at=None)
    login("viewer")
    page = client.get("/batches/sim/batch_running/").content.decode()
    shown = re.sub(r"<[^>]+>", "", re.search(r'<span id="eta">(.*?)</span></span>', page, re.S).group(1))
    assert shown.startswith("Later than typical: in progress usually takes 10m")
    assert "the p50 of 6 earlier gpt-4o-mini batches on this connection" in shown


def test_an_eta_after_the_batch_expires_says_so(client, login, connection, store_usage, now):
    start = int(now.timestamp()) - 600
    fields = dict(status="in_progress", created_at=start - 100, in_progress_at=start, finalizing_at=None,
                  completed_at=None, expires_at=int(now.timestamp()) + 60)
    store_usage(connection, "batch_running", now.date(), completed=10, observed_at=now - timedelta(minutes=5),
                **fields)
    store_usage(connection, "batch_running", now.date(), completed=11, observed_at=now, **fields)  # 1 a 5 minutes
    login("viewer")
    text, _ = _eta(client)
    assert "naive" in text and "after it expires" in text
