"""Fixtures of the browser tests: Debian's Chromium driven by Playwright's sync API, served apps,
and browser pages logged in as someone.

Chromium missing (or the playwright package) is a skip, and with CI=true a failure."""

from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import missing_service
from tests.e2e.support import ASYNC_UNSAFE, Server, session_cookie

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="package")
def browser():
    if not Path(CHROMIUM).exists():
        missing_service(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_service("the playwright package (pip install -e '.[test]')")
    # Playwright's sync API keeps an event loop running on this thread, and Django refuses ORM
    # calls from a thread with a running loop. Nothing runs on that loop while a test touches
    # the database (Playwright's calls block), so the guard is lifted while the browser runs.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ASYNC_UNSAFE, "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
            # With a loop running, Django keeps this thread's connections apart from the ones
            # it uses without: give them back to the pool, or the test database cannot be
            # dropped at the end of the run ("being accessed by other users").
            connections.close_all()


@pytest.fixture
def browse(browser):
    """browse(server, user=None): a new page in a browser of its own (cookies, storage),
    logged in as `user` if one is given. Uncaught script errors fail the test."""
    contexts = []
    errors: list[str] = []

    def open_page(server: Server, user=None):
        context = browser.new_context(base_url=server.url, viewport=VIEWPORT)
        context.set_default_timeout(15_000)
        context.set_default_navigation_timeout(30_000)
        contexts.append(context)
        if user is not None:
            context.add_cookies([session_cookie(user, server.url)])
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == [], "uncaught errors in the pages' scripts"
