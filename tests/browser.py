"""Driving Debian's Chromium with Playwright: launching it, opening a page that records console errors, logging in."""

import shutil
from pathlib import Path

from tests.conftest import PASSWORD

SHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def launch(playwright):
    return playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                      args=CHROMIUM_ARGS)


def open_page(browser, **options):
    """A page in a fresh context (its own cookies) at 1280×800 unless told otherwise, and the list its console
    errors and Content-Security-Policy reports go to."""
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **options})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: (m.type == "error" or "Content Security Policy" in m.text) and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def log_in(page, base: str, username: str) -> None:
    page.goto(base + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
