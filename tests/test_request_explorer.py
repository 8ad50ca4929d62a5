"""The results explorer (`/batches/<connection>/<batch id>/requests/`), one request's page (`…/requests/<custom id>/`)
and the exports (`…/requests/export.csv`, `…/requests/export.jsonl`): the table, its filters, sort and pages, the
counts against the API's, odd ids, hostile text, expired bodies, and who sees what."""

import csv
import io
import json
import re
from html import unescape

import pytest
from django.utils import timezone

from batches.models import ArchivedFile, AuditEvent, BatchRequest
from tests.htmlparts import out_of_band
from tests.requestindex import Req, index_batch

HX = {"HTTP_HX_REQUEST": "true"}
URL = "/batches/sim/batch_done/requests/"

pytestmark = pytest.mark.usefixtures("archive_dir")


@pytest.fixture
def operator(login):
    return login("operator")


@pytest.fixture
def viewer(login):
    return login("viewer")


def six(**overrides) -> list[Req]:
    """The finished batch's six requests: four succeeded, two failed with different codes."""
    return [
        Req("req-1", answer="Paris is the capital.", tokens=(10, 5)),
        Req("req-2", answer="Blue whales are large.", tokens=(40, 30)),
        Req("req-3", outcome="failed", error_code="context_length_exceeded", status_code=400,
            message="This model's maximum context length is 128000 tokens."),
        Req("req-4", answer="Seven.", tokens=(3, 1)),
        Req("req-5", outcome="failed", error_code="rate_limit_exceeded", status_code=429, message="Slow down."),
        Req("req-6", answer="Tuesday.", tokens=(20, 2)),
        *overrides.get("more", []),
    ]


def _ids(response) -> list[str]:
    return [unescape(i) for i in re.findall(r'<tr class="request-[^"]*">\s*<td class="mono" data-label="Custom id">'
                                            r'<a href="[^"]*" title="([^"]*)"', response.content.decode())]


def _get(client, url, status=200, **headers):
    response = client.get(url, **headers)
    assert response.status_code == status, (url, response.status_code)
    return response


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


# ----- the table ---------------------------------------------------------------------------------------------
def test_the_table_shows_each_requests_outcome_status_error_code_tokens_and_preview(client, operator, completed_batch):
    index_batch(completed_batch, six())
    page = _get(client, URL).content.decode()
    assert _ids(_get(client, URL)) == ["req-1", "req-2", "req-3", "req-4", "req-5", "req-6"]
    row = re.search(r'<tr class="request-failed">.*?</tr>', page, re.S).group()
    assert "req-3" in row and ">400<" in row and "context_length_exceeded" in row and "maximum context length" in row
    assert 'title="40 in, 30 out">70</td>' in page  # req-2's total, its parts on hover
    assert 'id="export-csv"' in page and 'id="export-jsonl"' in page
    assert 'name="q"' in page  # operators may search the previews


def test_every_row_links_to_its_request_page(client, operator, completed_batch):
    index_batch(completed_batch, six())
    page = _get(client, URL).content.decode()
    assert 'href="/batches/sim/batch_done/requests/req-3/"' in page


@pytest.mark.parametrize("query,expected", [
    ("?outcome=failed", ["req-3", "req-5"]),
    ("?outcome=succeeded&outcome=failed", ["req-1", "req-2", "req-3", "req-4", "req-5", "req-6"]),
    ("?error=rate_limit_exceeded", ["req-5"]),
    ("?custom_id=-4", ["req-4"]),
    ("?q=whale", ["req-2"]),
    ("?q=WHALE", ["req-2"]),
    ("?q=%C3%A9t%C3%A9+%C3%A0+Z%C3%BCrich", ["req-7"]),  # "été à Zürich": text beyond A–Z is matched as it is
    ("?q=slow+down&outcome=failed", ["req-5"]),
    ("?outcome=succeeded&custom_id=req-", ["req-1", "req-2", "req-4", "req-6"]),
    ("?outcome=expired", []),
    ("?error=nope", []),
])
def test_filters_narrow_the_table(client, operator, completed_batch, query, expected):
    index_batch(completed_batch, six(more=[Req("req-7", answer="Un été à Zürich.", tokens=None)]))
    expected = expected + ["req-7"] if query in ("?outcome=succeeded&outcome=failed",
                                                 "?outcome=succeeded&custom_id=req-") else expected
    response = _get(client, URL + query)
    assert _ids(response) == expected
    assert f'<span id="request-total">{len(expected)} request' in response.content.decode()


def test_the_error_code_menu_lists_the_batchs_codes_with_counts(client, operator, completed_batch):
    index_batch(completed_batch, six())
    page = _get(client, URL).content.decode()
    assert '<option value="context_length_exceeded">context_length_exceeded (1)</option>' in page
    assert '<option value="rate_limit_exceeded">rate_limit_exceeded (1)</option>' in page


def test_a_viewer_sees_no_preview_and_cannot_search_the_previews(client, viewer, completed_batch):
    index_batch(completed_batch, six())
    page = _get(client, URL).content.decode()
    assert "Paris" not in page and "maximum context length" not in page and "Slow down" not in page
    assert 'name="q"' not in page and "Preview" not in page and 'id="export-jsonl"' not in page
    searched = _get(client, URL + "?q=whale", follow=True)
    assert _ids(searched) == ["req-1", "req-2", "req-3", "req-4", "req-5", "req-6"]  # ignored: no oracle
    assert "Searching the previews needs permission" in searched.content.decode()


@pytest.mark.parametrize("sort,expected", [
    ("-tokens", ["req-2", "req-6", "req-1", "req-4", "req-3", "req-5"]),
    ("tokens", ["req-4", "req-1", "req-6", "req-2", "req-3", "req-5"]),
])
def test_it_sorts_by_tokens_with_untokened_requests_last(client, operator, completed_batch, sort, expected):
    index_batch(completed_batch, six())
    assert _ids(_get(client, f"{URL}?sort={sort}")) == expected


def _next(response) -> str | None:
    found = re.search(r'<a href="([^"]*)" rel="next"', response.content.decode())
    return URL + unescape(found.group(1)) if found else None


def _previous(response) -> str | None:
    found = re.search(r'<a href="([^"]*)" rel="prev"', response.content.decode())
    return URL + unescape(found.group(1)) if found else None


@pytest.mark.parametrize("sort", ["", "-tokens", "tokens"])
def test_the_pager_walks_every_row_once_forwards_and_back(client, operator, completed_batch, settings, sort):
    settings.LIST_PAGE_SIZE = 4
    many = [Req(f"r{i:03d}", tokens=(i % 7, 1) if i % 5 else None, outcome="succeeded" if i % 5 else "failed")
            for i in range(23)]
    index_batch(completed_batch, many)
    first = URL + (f"?sort={sort}" if sort else "")
    pages, url = [], first
    while url:
        response = _get(client, url)
        pages.append(_ids(response))
        if len(pages) > 1:
            assert "after=" in url  # keyset links, not page numbers alone
        url = _next(response)
    seen = [i for p in pages for i in p]
    assert sorted(seen) == sorted(r.custom_id for r in many) and len(pages) == 6
    back, url = [], _previous(response)
    while url:
        response = _get(client, url)
        back.insert(0, _ids(response))
        url = _previous(response)
    assert back == pages[:-1]


def test_a_cursor_that_does_not_fit_is_ignored(client, operator, completed_batch):
    index_batch(completed_batch, six())
    assert _ids(_get(client, URL + "?after=bm90LWpzb24&page=2")) == ["req-1", "req-2", "req-3", "req-4", "req-5",
                                                                     "req-6"]


def test_filtered_totals_stop_at_the_count_limit(client, operator, completed_batch, settings):
    settings.LIST_COUNT_LIMIT = 3
    index_batch(completed_batch, six())
    assert '<span id="request-total">3+ requests' in _get(client, URL + "?custom_id=req").content.decode()
    assert '<span id="request-total">4 requests' in _get(client, URL + "?outcome=succeeded").content.decode()


def _sql(client, url) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        _get(client, url)
    return [q["sql"] for q in queries.captured_queries if "batches_batchrequest" in q["sql"]]


def test_a_complete_index_is_counted_once_and_a_search_once_per_filter(client, operator, completed_batch):
    index_batch(completed_batch, six())
    first = _sql(client, URL + "?q=whale&sort=-tokens")
    assert sum("GROUP BY" in q for q in first) == 1  # the tally
    assert sum("COUNT(*) OVER ()" in q for q in first) == 1  # a search matching few: counted with its rows
    assert len(first) == 4  # the tally, a sample's ids and matches, the page
    again = _sql(client, URL + "?q=whale&sort=-tokens")
    assert len(again) == 1 and "GROUP BY" not in again[0] and "COUNT" not in again[0]  # the page's rows only
    assert len(_sql(client, URL + "?outcome=failed")) == 1


@pytest.mark.parametrize("query,limit,window", [
    ("?custom_id=req", 3, False),  # by custom id, dense: counted up to the limit, then found early in key order
    ("?custom_id=req", 10_000, False),
    ("?custom_id=req-3", 10_000, True),  # sparse: counted with its rows
    ("?custom_id=req&sort=-tokens", 10_000, True),  # by tokens, a pass over the batch anyway
    ("?custom_id=req&sort=-tokens", 100, False),  # unless holding the matches costs more than a count reads
])
def test_a_searchs_first_page_is_counted_the_cheaper_way(client, operator, completed_batch, settings, query, limit,
                                                          window):
    settings.LIST_COUNT_LIMIT = limit
    index_batch(completed_batch, six(more=[Req(f"req-other-{i}") for i in range(1100)]))  # a sample of 1,000 rows
    first = _sql(client, URL + query)
    assert any("OVER ()" in q for q in first) == window
    assert any(q.startswith("SELECT COUNT(*) FROM (SELECT") and f"LIMIT {limit + 1}" in q for q in first) != window


def test_an_index_still_being_built_is_counted_afresh_each_time(client, operator, completed_batch):
    index_batch(completed_batch, six(), indexed=False)
    for _ in range(2):
        assert sum("GROUP BY" in q for q in _sql(client, URL)) == 1
        counts = _sql(client, URL + "?q=a")
        assert sum(q.startswith("SELECT COUNT(*) FROM (SELECT") or "OVER ()" in q for q in counts) == 1


def test_a_deep_page_of_a_search_counts_it_when_no_count_is_kept(client, operator, completed_batch, settings):
    from django.core.cache import cache

    settings.LIST_PAGE_SIZE = 2
    index_batch(completed_batch, six())
    second = _next(_get(client, URL + "?custom_id=req"))
    cache.clear()
    response = _get(client, second)
    assert _ids(response) == ["req-3", "req-4"] and '<span id="request-total">6 requests · page 2 of 3' in \
        response.content.decode()


# ----- counts and their explanation ------------------------------------------------------------------------------
def _card(page: str, name: str) -> str:
    return re.search(rf'<a class="card stat[^"]*" href="[^"]*"[^>]*id="count-{name}">(.*?)</a>', page, re.S).group(1)


def test_counts_per_outcome_match_the_api_and_need_no_explanation(client, operator, completed_batch):
    index_batch(completed_batch, six())
    page = _get(client, URL).content.decode()
    assert re.search(r'stat-count">4<.*API: 4', _card(page, "succeeded"), re.S)
    assert re.search(r'stat-count">2<.*API: 2', _card(page, "failed"), re.S)
    assert re.search(r'stat-count">6<.*API: 6', _card(page, "total"), re.S)
    assert "differs" not in page and 'id="count-notes"' not in page
    assert 'href="?outcome=failed"' in page


def test_unrun_requests_of_an_expired_batch_explain_the_difference(client, operator, connection):
    from batches.store import store_batch
    from tests import payloads

    batch = store_batch(connection, payloads.batch(
        id="batch_late", status="expired", output_file_id="file-out", error_file_id="file-err",
        request_counts={"total": 5, "completed": 2, "failed": 1}))[0]
    index_batch(batch, [Req("a"), Req("b"), Req("c", outcome="failed"), Req("d", outcome="expired"),
                        Req("e", outcome="expired")])
    page = _get(client, "/batches/sim/batch_late/requests/").content.decode()
    assert re.search(r'stat-count">2<', _card(page, "expired"))
    assert "differs" not in _card(page, "failed")  # the API's failed leaves out what never ran
    assert 'id="count-notes"' not in page  # every count agrees: nothing to explain

    batch.failed_requests = 3  # an API that counts them as failed
    batch.save()
    page = _get(client, "/batches/sim/batch_late/requests/").content.decode()
    assert "differs" in _card(page, "failed")
    assert "The API counts the requests that never ran (2 expired) as failed" in page


def test_an_index_short_of_the_api_says_why(client, operator, completed_batch):
    index_batch(completed_batch, six()[:4], malformed=2)
    page = _get(client, URL).content.decode()
    notes = re.search(r'<div class="warning" id="count-notes">(.*?)</div>', page, re.S).group(1)
    assert "2 lines of the archived files could not be read" in notes
    assert "differs" in _card(page, "total")


def test_a_batch_the_index_is_still_reading_shows_its_progress_and_polls_once(client, operator, completed_batch,
                                                                             settings):
    files = index_batch(completed_batch, six()[:3], indexed=False)
    ArchivedFile.objects.filter(pk=files["output"].pk).update(indexed_lines=2)
    page = _get(client, URL).content.decode()
    assert "Indexing… 2 lines so far" in page
    assert page.count(f'hx-trigger="every {settings.LIVE_POLL_SECONDS}s') == 1
    assert "The index is still being built (2 lines so far)" in page
    poll = unescape(re.search(r'<div id="requests-poll"[^>]*hx-get="([^"]+)"', page).group(1))
    assert _get(client, poll, 204, **HX).content == b""  # nothing changed

    BatchRequest.objects.filter(custom_id="req-1").delete()  # (the rows follow the files' progress below)
    ArchivedFile.objects.filter(batch=completed_batch).update(indexed_at=timezone.now(), indexed_lines=5)
    done = _get(client, poll, **HX).content.decode()
    assert set(out_of_band(done)) == {"requests-poll", "requests-overview", "requests-table"}
    assert "hx-trigger" not in done and "Indexing…" not in done  # done: the poll stops


@pytest.mark.parametrize("setup,reason", [
    ("none", "Archiving is off (ARCHIVE_FILES=none)"),
    ("not_yet", "Its files have not been archived yet"),
    ("backfill", "finished before Batchboard first saw it; such batches are archived only when they finished "
                 "within ARCHIVE_BACKFILL_DAYS (0 days)"),
    ("failed", "Copying the output file failed (3 attempts): 403 Forbidden &lt;b&gt;"),
    ("gone", "The error file was deleted by the API before it could be copied."),
    ("active", "The batch has not finished"),
])
def test_nothing_archived_says_why_and_links_to_the_downloads(client, operator, completed_batch, settings, setup,
                                                                reason):
    from datetime import timedelta

    from batches.models import Batch

    if setup == "none":
        settings.ARCHIVE_FILES = "none"
    elif setup == "backfill":
        Batch.objects.filter(pk=completed_batch.pk).update(first_seen_at=completed_batch.completed_at + timedelta(days=9))
    elif setup == "failed":
        ArchivedFile.objects.create(batch=completed_batch, kind="output", file_id="file-out", state="failed",
                                    attempts=3, last_error="403 Forbidden <b>")
    elif setup == "gone":
        ArchivedFile.objects.create(batch=completed_batch, kind="error", file_id="file-err", state="gone")
    elif setup == "active":
        Batch.objects.filter(pk=completed_batch.pk).update(status="in_progress")
    elif setup == "not_yet":
        Batch.objects.filter(pk=completed_batch.pk).update(first_seen_at=completed_batch.created_at)
    page = _get(client, URL).content.decode()
    warning = re.search(r'<div class="warning" id="not-archived">(.*?)</div>', page, re.S).group(1)
    assert "Nothing to explore yet" in warning and reason in warning
    assert 'href="/batches/sim/batch_done/files/input/"' in warning  # the API's copies, while it keeps them


# ----- one request --------------------------------------------------------------------------------------------
def test_a_request_shows_its_facts_bodies_and_conversation(client, operator, completed_batch):
    index_batch(completed_batch, six())
    page = _get(client, URL + "req-1/").content.decode()
    assert "Indexed facts" in page and "10 in · 5 out · 15 total" in page
    conversation = re.search(r'<ol class="conversation">(.*?)</ol>', page, re.S).group(1)
    turns = re.findall(r'<span class="role">(.*?)</span><div class="text">(.*?)</div>', conversation, re.S)
    assert turns == [("system", "Be brief."), ("user", "What is 2+2?"), ("assistant", "Paris is the capital.")]
    request_body = re.search(r'<section class="card body" id="body-input">(.*?)</section>', page, re.S).group(1)
    assert "<details open><summary>Body</summary>" in request_body
    assert json.loads(unescape(re.search(r'<pre class="json" tabindex="0">(.*?)</pre>', request_body, re.S)
                               .group(1)))["messages"][1]["content"] == "What is 2+2?"
    assert "&quot;total_tokens&quot;: 15" in re.search(r'id="body-output">(.*?)</section>', page, re.S).group(1)


def test_a_failed_request_shows_its_error_body_and_links_to_the_previous_and_next_failed(client, operator,
                                                                                       completed_batch):
    index_batch(completed_batch, six(more=[Req("req-9", outcome="failed", message="Later.")]))
    page = _get(client, URL + "req-5/").content.decode()
    error = re.search(r'<section class="card body" id="body-error">(.*?)</section>', page, re.S).group(1)
    assert "<h2>Error " in error and "&quot;code&quot;: &quot;rate_limit_exceeded&quot;" in error
    assert "Slow down." in error
    assert 'id="previous-failed" rel="prev" href="/batches/sim/batch_done/requests/req-3/"' in page
    assert 'id="next-failed" rel="next" href="/batches/sim/batch_done/requests/req-9/"' in page
    first = _get(client, URL + "req-3/").content.decode()
    assert "no failed request before" in first and 'href="/batches/sim/batch_done/requests/req-5/"' in first


@pytest.mark.parametrize("failed,expected", [(0, 0), (1, 1), (30, 2)])
def test_the_failed_neighbours_cost_one_read_at_most_when_failures_are_rare(client, operator, completed_batch,
                                                                              failed, expected):
    reqs = [Req(f"r{i:03d}", outcome="failed" if i % 3 == 0 and i < failed * 3 else "succeeded")
            for i in range(150)]
    index_batch(completed_batch, reqs)
    _get(client, URL + "r100/")  # the tally, counted once
    queries = _sql(client, URL + "r100/")
    assert len(queries) == 1 + expected, queries  # the request itself, then its neighbours
    page = _get(client, URL + "r100/").content.decode()
    assert ('id="previous-failed"' in page) == bool(failed) and 'id="next-failed"' not in page


ODD_IDS = ["a/b/c", "../..", ".", "with space", "百分之百 ✓", "%2F%00x", "?q=1#frag", "-=HYPERLINK()", "~tilde",
           "export.csv", "export", "x" * 5000, "é" * 3000, "/" * 400]


@pytest.mark.parametrize("custom_id", ODD_IDS, ids=lambda v: repr(v[:20]) + (f"…{len(v)}" if len(v) > 20 else ""))
def test_any_custom_id_has_one_short_url_that_opens_its_page(client, operator, completed_batch, custom_id):
    index_batch(completed_batch, [Req("plain"), Req(custom_id, answer="odd one"), Req(custom_id + "!")])
    page = _get(client, URL).content.decode()
    links = [unescape(h) for h in re.findall(r'<td class="mono" data-label="Custom id"><a href="([^"]+)"', page)]
    assert len(links) == 3 and len(set(links)) == 3
    assert all(len(link) < 400 and link.startswith(URL) and link.count("/") == 6 for link in links)
    odd = links[[r.custom_id for r in BatchRequest.objects.order_by("custom_id")].index(custom_id)]
    shown = _get(client, odd).content.decode()
    assert '<span class="role">assistant</span><div class="text">odd one</div>' in shown
    assert f'data-copy="{escape_attr(custom_id)}"' in shown


def escape_attr(value: str) -> str:
    from django.utils.html import escape

    return escape(value)


@pytest.mark.parametrize("segment", ["~cmVxLTE", "~cmVxLTE=", "~~cmVxLTE.00", "x" * 301, "~", "nope"])
def test_a_url_that_is_not_a_requests_canonical_one_is_a_404(client, operator, completed_batch, segment):
    index_batch(completed_batch, [Req("req-1"), Req("x" * 301)])
    _get(client, f"{URL}{segment}/", 404)


def test_a_request_of_another_batch_is_a_404(client, operator, completed_batch, connection):
    from batches.store import store_batch
    from tests import payloads

    other = store_batch(connection, payloads.batch(id="batch_other", status="completed"))[0]
    index_batch(other, [Req("only-there")])
    _get(client, URL + "only-there/", 404)


HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)>\u202eevil'


def test_hostile_ids_previews_and_bodies_are_escaped(client, operator, completed_batch):
    index_batch(completed_batch, [Req(HOSTILE, question=HOSTILE, answer=HOSTILE, preview=HOSTILE),
                                 Req("b", outcome="failed", message=HOSTILE, error_code="<b>code</b>")])
    for url in (URL, URL + "?error=%3Cb%3Ecode%3C%2Fb%3E", URL + "b/"):
        page = _get(client, url).content.decode()
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>code</b>" not in page
    table = _get(client, URL).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in table and "⟨U+202E⟩evil" in table
    request_url = unescape(re.search(r'<td class="mono" data-label="Custom id"><a href="([^"]+)"', table).group(1))
    page = _get(client, request_url).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "\u202e" not in re.sub(r'data-copy="[^"]*"', "", page)  # only the copy button holds the exact id
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # id, conversation, both bodies


def test_a_line_that_is_not_json_is_shown_as_escaped_text(client, operator, completed_batch):
    index_batch(completed_batch, [Req("bad", input_line=b'{"custom_id": "bad", <b>oops\xff',
                                     result_line=b"not json at all </pre><script>x</script>")])
    page = _get(client, URL + "bad/").content.decode()
    assert page.count("is not valid JSON: shown as text, escaped.") == 2
    assert "&lt;b&gt;oops\ufffd" in page and "&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;" in page
    assert 'id="conversation"' not in page


def test_a_removed_copy_shows_body_expired_and_keeps_the_facts(client, operator, completed_batch):
    index_batch(completed_batch, six(), state="removed")
    page = _get(client, URL + "req-3/").content.decode()
    assert page.count("Body expired") == 2
    assert "context_length_exceeded" in page and ">400<" in page and "Indexed facts" in page
    assert "maximum context length" in page  # the preview is indexed, not read from the copy


def test_a_copy_missing_from_storage_costs_the_body_not_the_page(client, operator, completed_batch, archive_dir):
    files = index_batch(completed_batch, six())
    (archive_dir / files["output"].name).unlink()
    page = _get(client, URL + "req-1/").content.decode()
    assert "The output line could not be read from the archive right now." in page
    assert 'id="body-input"' in page and "What is 2+2?" in page


def test_inputs_not_kept_by_archive_files_results_say_so(client, operator, completed_batch, settings):
    settings.ARCHIVE_FILES = "results"
    index_batch(completed_batch, six(), kinds=("output", "error"))
    page = _get(client, URL + "req-1/").content.decode()
    assert "The input file is not archived (ARCHIVE_FILES=results keeps only output and error files)." in page
    assert "Paris is the capital." in page


def test_a_viewer_sees_the_facts_of_a_request_but_no_body(client, viewer, completed_batch):
    index_batch(completed_batch, six())
    page = _get(client, URL + "req-3/").content.decode()
    assert "context_length_exceeded" in page and ">400<" in page and 'id="content-hidden"' in page
    assert "maximum context length" not in page and "What is 2+2?" not in page and "body-input" not in page


# ----- exports ---------------------------------------------------------------------------------------------
def test_the_csv_export_streams_the_filtered_indexed_columns_safely(client, operator, completed_batch):
    index_batch(completed_batch, six(more=[Req("=cmd|' /C calc'!A0", preview="+SUM(1)", answer="x"),
                                         Req("@at", preview="-2")]))
    response = _get(client, URL + "export.csv?outcome=succeeded&sort=-tokens&page=2")
    assert response.streaming and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="batch_done_requests.csv"'
    rows = list(csv.reader(io.StringIO(_body(response).decode())))
    assert rows[0] == ["custom_id", "outcome", "status_code", "error_code", "model", "input_tokens", "output_tokens",
                       "total_tokens", "preview"]
    assert [r[0] for r in rows[1:]] == ["'=cmd|' /C calc'!A0", "'@at", "req-1", "req-2", "req-4", "req-6"]
    assert rows[1][8] == "'+SUM(1)" and rows[2][8] == "'-2" and rows[3][1:4] == ["succeeded", "200", ""]
    event = AuditEvent.objects.get(action="download")
    assert event.detail == "requests.csv" and event.ok and "outcome=succeeded" in event.result
    assert "completed" in event.result and event.batch == completed_batch


def test_a_viewers_csv_has_no_preview_column(client, viewer, completed_batch):
    index_batch(completed_batch, six())
    rows = list(csv.reader(io.StringIO(_body(_get(client, URL + "export.csv?q=whale")).decode())))
    assert "preview" not in rows[0] and len(rows) == 7 and not any("Paris" in c for r in rows for c in r)


def test_the_jsonl_export_streams_the_original_lines_of_the_filter(client, operator, completed_batch, archive_dir):
    files = index_batch(completed_batch, six())
    response = _get(client, URL + "export.jsonl?outcome=failed&outcome=succeeded&custom_id=req-")
    assert response.streaming and response["Content-Type"] == "application/jsonl"
    body = _body(response)
    output = (archive_dir / files["output"].name).read_bytes()
    errors = (archive_dir / files["error"].name).read_bytes()
    assert body == output + errors  # every line, byte for byte, the output file's first
    failed = _body(_get(client, URL + "export.jsonl?error=rate_limit_exceeded"))
    assert [json.loads(line)["custom_id"] for line in failed.splitlines()] == ["req-5"]
    assert AuditEvent.objects.filter(action="download", detail="requests.jsonl", ok=True).count() == 2


def test_the_jsonl_export_reads_each_file_once_in_chunks_across_line_boundaries(completed_batch, monkeypatch):
    from batches import archive, explorer

    reqs = [Req(f"r{i:04d}", answer="word " * (i % 50)) for i in range(300)]
    files = index_batch(completed_batch, reqs)
    rows = BatchRequest.objects.filter(batch=completed_batch, custom_id__in=[f"r{i:04d}" for i in range(0, 300, 7)])
    reads, stream = [], archive.stream

    def small_chunks(archived, start=0):
        reads.append(start)
        return stream(archived, start=start, chunk_size=97)

    monkeypatch.setattr(archive, "stream", small_chunks)
    body = b"".join(explorer.jsonl_chunks(rows, files, chunk_bytes=500))
    assert reads == [0]  # one pass over the output file, from the first line wanted
    assert [json.loads(line)["custom_id"] for line in body.splitlines()] == [f"r{i:04d}" for i in range(0, 300, 7)]


def test_a_viewer_may_not_export_jsonl(client, viewer, completed_batch):
    index_batch(completed_batch, six())
    assert b"Not allowed" in _get(client, URL + "export.jsonl", 403).content


def test_jsonl_of_removed_copies_is_refused_and_audited(client, operator, completed_batch):
    index_batch(completed_batch, six(), state="removed")
    page = _get(client, URL + "export.jsonl?outcome=failed", 410).content.decode()
    assert "removed after ARCHIVE_RETENTION_DAYS" in page and "CSV export" in page
    assert AuditEvent.objects.get(action="download", detail="requests.jsonl").ok is False


def test_an_unknown_export_is_a_404(client, operator, completed_batch):
    _get(client, URL + "export.xlsx", 404)


# ----- the batch page and the files panel ----------------------------------------------------------------------
def test_the_batch_page_links_to_the_explorer_and_its_failed_requests(client, viewer, completed_batch):
    page = _get(client, "/batches/sim/batch_done/").content.decode()
    assert f'<a id="explore-requests" href="{URL}">Requests: explore all 6</a>' in page
    assert f'<a id="see-failed" href="{URL}?outcome=failed">2 failed — see them</a>' in page


def test_the_files_panel_hides_error_messages_from_viewers(client, login, completed_batch):
    from django.core.cache import cache

    from batches import files

    for kind in ("input", "output", "error"):  # read already: the panel schedules nothing
        key = files._cache_key("file-meta", completed_batch.connection_id, completed_batch.file_id(kind))
        cache.set(key, {"bytes": 9})
    cache.set(files._summary_key(completed_batch), {"lines": 2, "bytes_read": 100, "truncated": False, "groups": [
        {"status": 400, "code": "bad_thing", "count": 2,
         "examples": [{"custom_id": "req-3", "message": "secret prompt echoed"}]}]})
    login("viewer", username="v")
    page = _get(client, "/batches/sim/batch_done/files/").content.decode()
    assert "bad_thing" in page and "req-3" in page and "secret prompt echoed" not in page
    assert f'href="{URL}?error=bad_thing"' in page
    login("operator", username="o")
    assert "secret prompt echoed" in _get(client, "/batches/sim/batch_done/files/").content.decode()


# ----- from the simulator's files, through the real index -----------------------------------------------------
def test_a_batch_indexed_from_its_archived_files_counts_as_the_api_does(client, operator, archived_batch):
    from batches.results import index_batch as index_archived

    batch = archived_batch("completed", lines=80, fail_share=0.25)
    index_archived(batch.pk)
    url = f"/batches/sim/{batch.batch_id}/requests/"
    page = _get(client, url).content.decode()
    assert "count-notes" not in page  # no difference to explain
    failed = _ids(_get(client, url + "?outcome=failed"))
    assert len(failed) == batch.failed_requests > 0
    request_page = _get(client, f"{url}{failed[0]}/").content.decode()
    assert '"error"' in unescape(request_page)  # the error body, read from the archived error file


def test_the_explorer_offers_to_retry_what_failed_to_those_who_may(client, login, completed_batch):
    index_batch(completed_batch, six())
    login("operator")
    page = _get(client, URL).content.decode()
    assert 'id="retry-requests" href="/batches/sim/batch_done/retry/">Retry 2 requests…' in page
    page = _get(client, URL + "?error=rate_limit_exceeded").content.decode()
    assert 'href="/batches/sim/batch_done/retry/?codes=rate_limit_exceeded">Retry the requests that failed' in page
    login("viewer")
    assert "retry-requests" not in _get(client, URL).content.decode()


@pytest.mark.parametrize("cursor", ["[" * 1400, '["\\ud800"]', '["\\ud800", 3]'])
def test_a_hostile_cursor_is_ignored_not_a_server_error(client, viewer, completed_batch, cursor):
    import base64

    index_batch(completed_batch, six())
    encoded = base64.urlsafe_b64encode(cursor.encode()).decode()
    for query in (f"?page=2&after={encoded}", f"?page=3&before={encoded}", f"?sort=-tokens&page=2&after={encoded}"):
        assert _get(client, URL + query).status_code == 200
