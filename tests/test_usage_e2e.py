"""The usage page in Chromium: its charts drawn (a focused bar says its value), and the CSV a reader downloads
equal to the table the page shows; screenshots for the docs, desktop light and phone dark."""

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser import SHOTS, log_in, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture
def site(live_server, login, connection, other_connection, store_usage, set_prices):
    """A week of batches on two connections, two models and two teams; a Viewer."""
    set_prices(("gpt-4o-mini", timezone.now().date() - timedelta(days=400), 0.15, 0.075, 0.6),
               ("gpt-4o", timezone.now().date() - timedelta(days=400), 2.5, 1.25, 10))
    today = timezone.now().date()
    for i in range(7):
        day = today - timedelta(days=i)
        store_usage(connection, f"batch_mini_{i}", day, input=2_000_000 * (i + 1), output=400_000, team="growth",
                    total=500, failed=i * 3)
        if i % 2 == 0:
            store_usage(other_connection, f"batch_big_{i}", day, input=800_000, cached=200_000, output=90_000,
                        model="gpt-4o", team="search")
    login("viewer")
    return live_server.url


def test_a_chart_is_drawn_and_the_csv_download_equals_the_table(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, errors = open_page(browser, accept_downloads=True)
    log_in(page, site, "viewer")
    page.goto(f"{site}/usage/?period=7&stack=model")
    chart = page.locator("#chart-cost svg.bars")
    expect(chart).to_be_visible()
    bars = chart.locator("g.bar")
    expect(bars).to_have_count(7)
    assert sorted(chart.locator(f"rect.series-{n}").count() for n in (0, 1)) == [4, 7]  # a segment per model
    last = bars.nth(6)
    last.focus()
    label = last.get_attribute("aria-label")
    assert label.startswith(f"{timezone.now().date():%Y-%m-%d}: $") and "gpt-4o: $" in label
    assert last.locator("title").text_content() == label
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == label
    page.screenshot(path=str(DOCS / "usage.png"), full_page=True)

    page.locator("#chart-cost details summary").click()
    table = page.locator("#table-cost")
    expect(table).to_be_visible()
    shown = [[cell.strip() for cell in row.locator("th, td").all_text_contents()]
             for row in table.locator("tr").all()]
    with page.expect_download() as download:
        page.click("#csv-cost")
    path = download.value.path()
    downloaded = list(csv.reader(Path(path).read_text().splitlines()))
    assert download.value.suggested_filename.startswith("batchboard-cost-")
    assert downloaded[1:] == shown[1:] and downloaded[0][1:-1] == shown[0][1:-1] and len(shown) == 8
    assert errors == []
    page.context.close()


def test_the_page_fits_a_phone_in_dark(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, errors = open_page(browser, viewport={"width": 390, "height": 844}, color_scheme="dark")
    log_in(page, site, "viewer")
    page.goto(f"{site}/usage/?period=7&stack=meta:team")
    expect(page.locator("#chart-tokens svg.bars")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling of the page
    page.screenshot(path=str(SHOTS / "usage-390-dark.png"), full_page=True)
    assert errors == []
    page.context.close()
