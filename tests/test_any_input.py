"""Random input at every list filter and at the id of every batch route never answers 500 (Hypothesis).

Examples per test come from the profile loaded in conftest.py ("ci" when CI is set, "dev" otherwise).
"""

import base64
import json
import re
from urllib.parse import quote, quote_from_bytes, urljoin

import pytest
from hypothesis import given, strategies as st

from batches.models import Batch, Connection
from batches.store import store_batch
from tests import payloads

FILTERS = ("status", "connection", "endpoint", "model", "created_from", "created_to", "q", "sort", "page", "v",
           "after", "before")
EXTREMES = ("9999-12-31", "0001-01-01", "10000-01-01", "2024-02-30", str(10**30), "9" * 5000, "-1", "0", "1e9",
            "\x00", "a\x00b", "\u202e", ".", "..", "~", "~AA", "%", "x" * 5000, "🚀" * 300, "completed", "sim")
# The pager's cursors: base64url of a JSON list, of anything JSON holds or shaped like a sort's position
# (a datetime at any offset, a number, a status).
_MOMENTS = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
_ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.sampled_from(EXTREMES), _MOMENTS)
CURSORS = st.one_of(st.lists(_ANYTHING, max_size=4), st.tuples(_MOMENTS, st.integers()).map(list),
                    st.tuples(st.text(), _MOMENTS, st.integers()).map(list)).map(
    lambda values: base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("="))
# Text, extremes, numbers, dates, cursors, and raw bytes that need not be UTF-8.
VALUES = st.one_of(st.text(), st.sampled_from(EXTREMES), st.integers().map(str), st.dates().map(str), CURSORS,
                   st.binary())
BATCH_ROUTES = (("get", ""), ("get", "files/"), ("get", "files/input/"), ("get", "files/{kind}/"),
                ("get", "cancel/"), ("post", "cancel/"), ("post", "refresh/"))


def _quoted(value) -> str:
    return quote_from_bytes(value, safe="") if isinstance(value, bytes) else quote(value, safe="")


@pytest.fixture(params=["viewer", "operator"])
def someone(request, login):
    return login(request.param)


@pytest.fixture
def odd(db):
    """A connection whose API does not answer (port 9), with batches of plain and odd ids."""
    conn = Connection(name="Odd", slug="odd", base_url="http://127.0.0.1:9/v1")
    conn.set_api_key("sk-odd")
    conn.save()
    for batch_id in ("batch_plain", "gw/batch/42", "..", "batch_\u202e", "é" * 255):
        store_batch(conn, payloads.batch(id=batch_id, status="in_progress"))
    return conn


@given(query=st.lists(st.tuples(st.sampled_from(FILTERS), VALUES), max_size=6), htmx=st.booleans())
def test_any_list_query_answers_without_a_server_error(client, someone, odd, query, htmx):
    path = "/?" + "&".join(f"{name}={_quoted(value)}" for name, value in query)
    response = client.get(path, follow=True, **({"HTTP_HX_REQUEST": "true"} if htmx else {}))
    assert response.status_code in (200, 204), path
    assert len(response.redirect_chain) <= 1, path  # at most once, to the URL without empty parameters


@given(segment=VALUES, kind=VALUES)
def test_any_id_segment_of_any_batch_route_answers_without_a_server_error(client, someone, odd, segment, kind):
    for method, suffix in BATCH_ROUTES:
        path = f"/batches/odd/{_quoted(segment)}/" + suffix.format(kind=_quoted(kind))
        assert getattr(client, method)(path).status_code < 500, (method, path)


@given(batch_id=st.text(min_size=1, max_size=255).filter(lambda s: s.strip() and "\x00" not in s))
def test_any_id_the_api_may_send_round_trips_from_the_list_to_its_page(client, someone, odd, batch_id):
    Batch.objects.filter(connection=odd).delete()
    store_batch(odd, payloads.batch(id=batch_id))
    listing = client.get("/")
    href = re.search(r'<td class="mono" data-label="Batch"><a href="([^"]+)"', listing.content.decode()).group(1)
    assert urljoin("http://testserver/", href) == "http://testserver" + href  # no segment a browser rewrites
    page = client.get(href)
    assert page.status_code == 200 and page.context["batch"].batch_id == batch_id
