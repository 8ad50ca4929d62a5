import base64
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from batches.selectors import SORT_LABELS
from batches.store import store_batch
from tests import payloads
from tests.htmlparts import out_of_band

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def viewer(login):
    return login("viewer")


def _store(connection, n=1, **overrides):
    for i in range(n):
        store_batch(connection, payloads.batch(**{"id": f"batch_{overrides.get('prefix', 'x')}{i:04d}",
                                                   **{k: v for k, v in overrides.items() if k != "prefix"}}))


def _ids(response) -> list[str]:
    return re.findall(r'title="(batch_[^"]+)"', response.content.decode())


def test_the_page_shows_cards_health_and_rows(client, viewer, connection, settings):
    _store(connection, 2, prefix="a", status="in_progress", request_counts={"total": 10, "completed": 4, "failed": 1})
    store_batch(connection, payloads.ALL_FAILED)
    page = client.get("/").content.decode()
    assert "batch_a0000" in page and "batch_abc123" in page
    assert 'href="?status=in_progress"' in page
    assert "completed · all failed" in page and "row-all_failed" in page
    assert "Simulator" in page and f"hx-trigger=\"every {settings.LIVE_POLL_SECONDS}s" in page


def test_an_htmx_poll_gets_the_fragment_not_the_page(client, viewer, connection):
    _store(connection, 1)
    response = client.get("/", **HX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert set(out_of_band(body)) >= {"batch-poll", "batch-cards", "batch-rows", "batch-pager", "live-announce"}


def test_an_unchanged_poll_is_answered_with_204(client, viewer, connection):
    _store(connection, 3)
    fragment = client.get("/", **HX).content.decode()
    poll_url = re.search(r'hx-get="([^"]+)"', fragment).group(1).replace("&amp;", "&")
    response = client.get(poll_url, **HX)
    assert response.status_code == 204 and response.content == b""
    store_batch(connection, payloads.batch(id="batch_new"))
    changed = client.get(poll_url, **HX)
    assert changed.status_code == 200 and "batch_new" in changed.content.decode()


def test_a_poll_without_htmx_is_a_normal_page(client, viewer, connection):
    response = client.get("/?v=whatever")
    assert response.status_code == 200 and b"<html" in response.content


def test_filters_by_status_several_at_once(client, viewer, connection):
    _store(connection, 2, prefix="run", status="in_progress")
    _store(connection, 2, prefix="val", status="validating")
    _store(connection, 2, prefix="done", status="completed")
    ids = _ids(client.get("/?status=in_progress&status=validating"))
    assert sorted(ids) == ["batch_run0000", "batch_run0001", "batch_val0000", "batch_val0001"]


def test_filters_by_unknown_and_all_failed(client, viewer, connection):
    store_batch(connection, payloads.FUTURE | {"id": "batch_future"})
    store_batch(connection, payloads.ALL_FAILED | {"id": "batch_allfail"})
    _store(connection, 1, prefix="ok", status="completed", request_counts={"total": 1, "completed": 1, "failed": 0})
    assert _ids(client.get("/?status=unknown")) == ["batch_future"]
    assert _ids(client.get("/?status=all_failed")) == ["batch_allfail"]


def test_filters_by_connection_endpoint_model_and_dates(client, viewer, connection):
    from batches.models import Connection

    other = Connection(name="Other", slug="other")
    other.set_api_key("sk-x")
    other.save()
    store_batch(connection, payloads.batch(id="batch_chat", endpoint="/v1/chat/completions", model="gpt-4o-mini"))
    store_batch(other, payloads.batch(id="batch_emb", endpoint="/v1/embeddings", model="text-embedding-3-small",
                                      created_at=payloads.CREATED + 5 * 86400))
    assert _ids(client.get("/?connection=other")) == ["batch_emb"]
    assert _ids(client.get("/?endpoint=/v1/embeddings")) == ["batch_emb"]
    assert _ids(client.get("/?model=gpt-4o-mini")) == ["batch_chat"]
    assert _ids(client.get("/?created_from=2024-03-28")) == ["batch_emb"]
    assert _ids(client.get("/?created_to=2024-03-27")) == ["batch_chat"]


def test_free_text_searches_ids_file_ids_and_metadata(client, viewer, connection):
    store_batch(connection, payloads.batch(id="batch_one", metadata={"description": "Quarterly Report"}))
    store_batch(connection, payloads.batch(id="batch_two", input_file_id="file-needle"))
    store_batch(connection, payloads.batch(id="batch_three"))
    assert _ids(client.get("/?q=quarterly")) == ["batch_one"]
    assert _ids(client.get("/?q=needle")) == ["batch_two"]
    assert _ids(client.get("/?q=three")) == ["batch_three"]


@pytest.mark.parametrize("query", ["status=bogus", "created_from=yesterday", "page=-3", "sort=drop+table",
                                   "connection=%3Cscript%3E", "created_from=2024-01-01&created_to=2023-01-01",
                                   "created_to=9999-12-31", "created_from=0001-01-01", "page=1" + "0" * 30,
                                   "page=0", "page=" + "9" * 5000, "q=a%00b", "model=%00", "endpoint=%00",
                                   "q=" + "x" * 5000, "model=%ff%fe", "q=%C0%AF",
                                   "created_to=2024-01-01&created_to=9999-12-31"])
def test_invalid_filters_give_a_message_not_an_error(client, viewer, connection, query):
    _store(connection, 2)
    response = client.get(f"/?{query}")
    assert response.status_code == 200
    assert "This filter was ignored." in response.content.decode()
    assert len(_ids(response)) == 2


def test_pagination_and_sort(client, viewer, connection, settings):
    settings.LIST_PAGE_SIZE = 5
    for i in range(12):
        store_batch(connection, payloads.batch(id=f"batch_{i:02d}", created_at=payloads.CREATED + i))
    first = client.get("/")
    assert _ids(first) == [f"batch_{i:02d}" for i in range(11, 6, -1)]
    assert "page 1 of 3" in first.content.decode()
    assert _ids(client.get("/?page=3")) == ["batch_01", "batch_00"]
    assert _ids(client.get("/?page=99")) == ["batch_01", "batch_00"]  # clamped to the last page
    assert _ids(client.get("/?sort=created"))[0] == "batch_00"


def test_strings_from_the_api_are_escaped(client, viewer, connection):
    store_batch(connection, payloads.batch(id="batch_xss", metadata={"description": "<script>alert(1)</script>"},
                                           model="<img src=x onerror=alert(2)>"))
    page = client.get("/").content.decode()
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)" in page


def test_an_empty_list_says_what_to_expect(client, viewer, connection):
    assert "No batches yet" in client.get("/").content.decode()
    assert "No batch matches these filters" in client.get("/?status=failed").content.decode()


def test_a_failing_connection_shows_a_warning_with_its_error(client, viewer, connection):
    from batches.models import Connection

    Connection.objects.filter(pk=connection.pk).update(consecutive_failures=2, last_error="HTTP 401: bad key",
                                                       last_success_at=timezone.now() - timedelta(hours=1))
    page = client.get("/").content.decode()
    assert "the last 2 syncs failed" in page and "HTTP 401: bad key" in page


def test_the_query_count_does_not_grow_with_the_page_size(client, viewer, connection, settings,
                                                          django_assert_max_num_queries):
    for i in range(60):
        store_batch(connection, payloads.batch(id=f"batch_{i:03d}"))
    for size in (5, 50):
        settings.LIST_PAGE_SIZE = size
        client.get("/?status=validating&q=batch")  # fills the status-count cache
        with django_assert_max_num_queries(8):  # the issue-11 ceiling, the team-grants query included
            client.get("/?status=validating&q=batch")
        with django_assert_max_num_queries(8):
            client.get("/")


def test_an_unreadable_api_key_is_the_warning_with_a_link_for_admins(client, login, connection, lost_key):
    from batches.sync import sync_connection

    sync_connection(connection_id=connection.pk)
    edit = f'href="/admin/batches/connection/{connection.pk}/change/"'
    login("viewer")
    page = client.get("/").content.decode()
    assert "the last 1 sync failed" in page and lost_key in page and edit not in page
    client.logout()
    login("admin")
    assert edit in client.get("/").content.decode()


def _walk(client, url: str, rel: str) -> tuple[list[str], list[str]]:
    """Follow the pager's `rel` links from `url` to the end: the ids in page order, and the URLs visited."""
    ids, urls = [], []
    while url:
        urls.append(url)
        response = client.get(url)
        page_ids = _ids(response)
        ids += page_ids if rel == "next" else page_ids[::-1]
        link = re.search(rf'href="([^"]*)" rel="{rel}"', response.content.decode())
        url = "/" + link.group(1).replace("&amp;", "&") if link else None
    return ids, urls


@pytest.fixture
def awkward_batches(connection):
    """Batches with equal creation times, equal and missing token counts, an unknown status."""
    for i in range(14):
        usage = None if i % 4 == 0 else {"total_tokens": (i % 3) * 100, "input_tokens": 0, "output_tokens": 0}
        store_batch(connection, payloads.batch(
            id=f"batch_{i:02d}", created_at=payloads.CREATED + i // 3, usage=usage,
            status=("completed", "in_progress", "failed", "paused_for_review")[i % 4],
            request_counts={"total": i % 5, "completed": 0, "failed": 0}))


@pytest.mark.parametrize("sort", list(SORT_LABELS))
def test_the_pager_walks_every_batch_once_in_order_both_ways(client, viewer, awkward_batches, settings, sort):
    settings.LIST_PAGE_SIZE = 100
    everything = _ids(client.get(f"/?sort={sort}"))
    settings.LIST_PAGE_SIZE = 3
    forward, urls = _walk(client, f"/?sort={sort}", "next")
    assert forward == everything and len(everything) == 14
    backward, _ = _walk(client, urls[-1], "prev")
    assert backward == everything[::-1]


def test_a_deep_page_through_the_pager_reads_on_from_the_last_row_not_by_offset(client, viewer, connection,
                                                                                settings):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    settings.LIST_PAGE_SIZE = 2
    _store(connection, 9)
    _, urls = _walk(client, "/?status=validating", "next")
    assert len(urls) == 5 and "after=" in urls[-1] and "page=5" in urls[-1]
    with CaptureQueriesContext(db) as queries:
        last = client.get(urls[-1])
    assert _ids(last) == ["batch_x0000"] and "page 5 of 5" in last.content.decode()
    listed = [q["sql"] for q in queries.captured_queries if 'FROM "batches_batch"' in q["sql"]]
    assert listed and not any("OFFSET" in sql for sql in listed)


@pytest.mark.parametrize("sort,column", [("status", "status"), ("-status", "status"), ("active", "in_flight"),
                                         ("progress", "done_permille"), ("-progress", "done_permille")])
def test_a_sort_by_a_column_of_few_values_reads_on_inside_its_value_not_from_its_start(
        client, viewer, awkward_batches, settings, sort, column):
    """`status <= 'x' AND (status < 'x' OR ...)` made PostgreSQL read every earlier row of that status (200 ms
    deep in a million batches); `status = 'x' AND ...` starts where the page did."""
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    settings.LIST_PAGE_SIZE = 2
    _, urls = _walk(client, f"/?sort={sort}", "next")
    for url in urls[1:]:
        with CaptureQueriesContext(db) as queries:
            client.get(url)
        listed = [q["sql"] for q in queries.captured_queries if 'FROM "batches_batch"' in q["sql"] and "LIMIT" in q["sql"]]
        assert listed and not any(re.search(rf'"{column}" [<>]=', sql) for sql in listed), listed


def test_a_page_link_shared_without_its_cursor_or_with_a_foreign_one_still_shows_that_page(client, viewer,
                                                                                           connection, settings):
    settings.LIST_PAGE_SIZE = 2
    _store(connection, 5)
    wrong_sort = re.search(r"after=([^&\"]+)", client.get("/?sort=status").content.decode()).group(1)
    extremes = ['["9999-12-31T23:59:59-14:00", 1]', '["0001-01-01T00:00:00+14:00", 1]', '["x", 1]', "[]"]
    for after in ["garbage", wrong_sort] + [base64.urlsafe_b64encode(e.encode()).decode() for e in extremes]:
        assert _ids(client.get(f"/?page=2&after={after}")) == ["batch_x0002", "batch_x0001"]
    surrogate = base64.urlsafe_b64encode(b'["\\ud800", "2026-01-01T00:00:00+00:00", 1]').decode()  # a lone surrogate
    assert client.get(f"/?sort=status&page=2&after={surrogate}").status_code == 200


def test_a_filtered_list_is_counted_up_to_the_limit(client, viewer, connection, settings):
    settings.LIST_COUNT_LIMIT, settings.LIST_PAGE_SIZE = 3, 2
    _store(connection, 5, prefix="needle")
    _store(connection, 2, prefix="hay")
    first = client.get("/?q=needle").content.decode()
    assert "3+ batches · page 1</span>" in first
    assert len(_walk(client, "/?q=needle", "next")[0]) == 5
    assert "2 batches" in client.get("/?q=hay").content.decode()


def test_the_cards_and_the_status_counts_never_count_the_batch_table(client, viewer, connection):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    _store(connection, 3, status="in_progress")
    store_batch(connection, payloads.ALL_FAILED | {"id": "batch_allfail"})
    for url in ("/", "/?status=in_progress&status=all_failed&connection=sim", "/?status=unknown"):
        store_batch(connection, payloads.batch(id="batch_x0000", status="finalizing"))  # a change each time
        with CaptureQueriesContext(db) as queries:
            page = client.get(url).content.decode()
        assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"] and "batches_batch" in q["sql"]]
    assert re.search(r'stat-count">2</span>\s*<span class="stat-label">in progress', page)
    assert "3 batches" in client.get("/?status=in_progress&status=all_failed").content.decode()


def _poll(client, page: str) -> str:
    """The URL the page's poll requests, its hx-vals (the rows it shows) included."""
    url = re.search(r'hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    rows = re.search(r'"rows": "([^"]*)"', page).group(1)
    return f"{url}&rows={rows}"


def test_a_poll_answers_one_changed_row_alone_in_under_5_kb(client, viewer, connection, settings):
    settings.LIST_PAGE_SIZE = 50
    _store(connection, 50, status="in_progress", request_counts={"total": 100, "completed": 10, "failed": 0})
    poll = _poll(client, client.get("/", **HX).content.decode())
    store_batch(connection, payloads.batch(id="batch_x0007", status="in_progress",
                                           request_counts={"total": 100, "completed": 60, "failed": 1}))
    response = client.get(poll, **HX)
    body = response.content.decode()
    swaps = out_of_band(body)
    rows = [key for key in swaps if key.startswith("row-")]
    assert len(rows) == 1 and swaps[rows[0]] == "morph" and "batch-rows" not in swaps
    assert "batch_x0007" in body and "60 + 1 failed" in body and "1 batch changed" in body
    assert len(response.content) < 5000, len(response.content)


def test_a_poll_sends_the_whole_body_when_rows_come_or_go(client, viewer, connection):
    _store(connection, 3)
    poll = _poll(client, client.get("/", **HX).content.decode())
    store_batch(connection, payloads.batch(id="batch_new", created_at=payloads.CREATED + 999))
    swaps = out_of_band(client.get(poll, **HX).content.decode())
    assert swaps["batch-rows"] == "morph" and not [key for key in swaps if key.startswith("row-")]


def test_empty_filters_never_stay_in_the_url(client, viewer, connection):
    response = client.get("/?status=failed&connection=&endpoint=&model=&q=&page=")
    assert response.status_code == 302 and response["Location"] == "/?status=failed"
    assert client.get("/?q=").headers["Location"] == "/"


def test_a_status_card_is_highlighted_and_keeps_the_other_filters(client, viewer, connection):
    _store(connection, 1)
    page = client.get("/?status=in_progress&model=gpt-4o-mini&sort=created").content.decode()
    card = re.search(r'<a class="card stat status-in_progress active" href="([^"]+)" aria-current="true">', page)
    assert card and "model=gpt-4o-mini" in card.group(1) and "sort=created" in card.group(1)
    assert 'href="?model=gpt-4o-mini&amp;sort=created&amp;status=failed"' in page


def test_every_sortable_column_sorts_both_ways_with_aria_sort(client, viewer, connection):
    for i, done in enumerate((90, 10, 50)):
        store_batch(connection, payloads.batch(id=f"batch_p{i}", status="in_progress",
                                               request_counts={"total": 100, "completed": done, "failed": 0}))
    store_batch(connection, payloads.batch(id="batch_done", status="completed", created_at=payloads.CREATED - 99,
                                           request_counts={"total": 100, "completed": 100, "failed": 0}))
    page = client.get("/?sort=-progress")
    assert _ids(page)[:3] == ["batch_done", "batch_p0", "batch_p2"]
    assert re.search(r'aria-sort="descending"><a href="\?sort=progress">Progress ↓</a>', page.content.decode())
    page = client.get("/?sort=progress")
    assert _ids(page)[:3] == ["batch_p1", "batch_p2", "batch_p0"]
    assert 'aria-sort="ascending"><a href="?sort=-progress">Progress ↑</a>' in page.content.decode()
    assert _ids(client.get("/?sort=active"))[-1] == "batch_done"
    for first, other in (("status", "-status"), ("-tokens", "tokens"), ("-created", "created")):
        assert client.get(f"/?sort={first}").status_code == client.get(f"/?sort={other}").status_code == 200
        assert f'href="?sort={other}"' in client.get(f"/?sort={first}").content.decode()


def test_a_failed_row_shows_its_reason(client, viewer, connection):
    store_batch(connection, payloads.VALIDATION_FAILED)
    page = client.get("/").content.decode()
    assert re.search(r'<td colspan="4" class="reason" data-label="Reason"><span class="mono">invalid_json_line</span>', page)


def test_search_understands_metadata_fields_models_and_validation_error_codes(client, viewer, connection):
    store_batch(connection, payloads.batch(id="batch_growth", metadata={"team": "growth"}, model="gpt-4.1-mini"))
    store_batch(connection, payloads.batch(id="batch_search", metadata={"team": "search"}))
    store_batch(connection, payloads.VALIDATION_FAILED)
    assert _ids(client.get("/?q=team:growth")) == ["batch_growth"]
    assert _ids(client.get("/?q=gpt-4.1-mini")) == ["batch_growth"]
    assert _ids(client.get("/?q=invalid_json_line")) == [payloads.VALIDATION_FAILED["id"]]
    assert "team:growth" in client.get("/").content.decode()  # the syntax is written next to the box


def test_the_request_error_filter_lists_batches_with_a_request_that_failed_with_that_code(
        client, login, connection, other_connection, two_teams, django_assert_max_num_queries):
    from batches.models import Batch, BatchRequest

    _store(connection, 4, prefix="s")
    store_batch(other_connection, payloads.batch(id="batch_o0000"))
    code = {"batch_s0001": "rate_limit_exceeded", "batch_s0003": "rate_limit_exceeded", "batch_s0002": "other_code",
            "batch_o0000": "rate_limit_exceeded"}
    for batch_id, error_code in code.items():
        batch = Batch.objects.get(batch_id=batch_id)
        BatchRequest.objects.bulk_create([
            BatchRequest(batch=batch, custom_id=f"r{i}", outcome=2, error_code=error_code) for i in range(3)] + [
            BatchRequest(batch=batch, custom_id="ok", outcome=1)])
    login("operator", team="Red")  # Red sees "sim" only: the other connection's batch with the code stays hidden
    with django_assert_max_num_queries(8):
        response = client.get("/?request_error=rate_limit_exceeded")
    page = response.content.decode()
    assert _ids(response) == ["batch_s0003", "batch_s0001"]  # each once, however many of its requests failed
    assert "2 batches" in page and 'value="rate_limit_exceeded"' in page and "Filters (1)" in page
    assert _ids(client.get("/?request_error=other_code&status=validating")) == ["batch_s0002"]
    assert _ids(client.get("/?request_error=nope")) == []
    too_long = client.get("/?request_error=" + "x" * 101, follow=True)
    assert len(_ids(too_long)) == 4 and "Request error code: " in too_long.content.decode()
