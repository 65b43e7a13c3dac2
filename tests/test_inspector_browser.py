"""The inspector in a real browser: Debian's headless chromium driven by Playwright, one server for the module.

Screenshots go to a temporary directory, or to ``LTST_SCREENSHOTS`` when set
(``LTST_SCREENSHOTS=docs/images python -m pytest tests/test_inspector_browser.py`` refreshes the docs').
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from _helpers import scratch_database
from playwright.sync_api import Browser, Page, expect, sync_playwright
from test_inspector import TOKEN, seed

from ltst_memory import ConversationStorage
from ltst_memory.embeddings import HashingEmbedder
from ltst_memory.inspector import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def site(pg_admin_dsn: str, template_db: str) -> Iterator[tuple[str, ConversationStorage]]:
    """The inspector on 127.0.0.1 (a free port) over a seeded database; yields (base url, store)."""
    with (
        scratch_database(pg_admin_dsn, template_db) as dsn,
        ConversationStorage(dsn, embedder=HashingEmbedder()) as store,
    ):
        seed(store)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        server = uvicorn.Server(uvicorn.Config(create_app(store, token=TOKEN), log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", store
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("LTST_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page(browser: Browser, site: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    yield opened
    context.close()


def login(page: Page, base: str, path: str = "/") -> None:
    page.goto(f"{base}{path}?token={TOKEN}")
    assert "token=" not in page.url  # the token moved into a cookie


def test_without_the_token_the_browser_gets_nothing(page: Page, site: Any) -> None:
    base, _ = site
    response = page.goto(f"{base}/users/alice")
    assert response is not None and response.status == 401
    expect(page.locator("body")).to_contain_text("401 Unauthorized")
    expect(page.locator("body")).not_to_contain_text("Lisbon")


def test_users_user_and_session_pages(page: Page, site: Any, shots: Path) -> None:
    base, _ = site
    login(page, base)
    expect(page.locator("#users")).to_contain_text("alice")
    page.screenshot(path=shots / "inspector-users.png", full_page=True)
    page.get_by_role("link", name="alice").click()
    expect(page.locator("#sessions")).to_contain_text("Lisbon trip")
    page.get_by_role("link", name="trip", exact=True).click()
    expect(page.locator("#messages tr.message")).to_have_count(4)
    expect(page.locator("#messages tr.off-branch")).to_contain_text("off branch")
    expect(page.locator("#messages")).to_contain_text('"speaker": "alice"')
    page.screenshot(path=shots / "inspector-session.png", full_page=True)


def test_recall_with_score_parts_through_htmx(page: Page, site: Any, shots: Path) -> None:
    base, _ = site
    login(page, base, "/users/alice")
    page.get_by_label("question").fill("Lisbon in March")
    page.get_by_role("button", name="find").click()
    rows = page.locator("#hits tr.hit")
    expect(rows.first).to_be_visible()
    assert page.url.endswith("/users/alice")  # htmx swapped the results in place
    cells = rows.first.locator("td.num").all_inner_texts()
    score, words, meaning, neighbour, recency = (float(x) for x in cells[1:6])
    assert words > 0 and abs(words + meaning + neighbour + recency - score) < 0.003
    expect(page.locator("#hits")).not_to_contain_text("Porto")  # bob's turn never shows up
    page.screenshot(path=shots / "inspector-recall.png", full_page=True)


def test_rehydrate_section_by_section(page: Page, site: Any, shots: Path) -> None:
    base, _ = site
    login(page, base, "/sessions/trip")
    page.get_by_label("question (optional)").fill("where do we go?")
    page.get_by_label("token budget").fill("60")
    page.get_by_role("button", name="rehydrate").click()
    expect(page.locator("#budget")).to_contain_text("of 60 tokens used")
    expect(page.locator("#budget .dropped").first).to_be_visible()
    expect(page.locator("section.section[data-section='recent']")).to_be_visible()
    page.locator("#rehydrated").scroll_into_view_if_needed()
    page.screenshot(path=shots / "inspector-rehydrate.png", full_page=True)


def test_edit_context_and_erase_a_user_with_confirmation(page: Page, site: Any) -> None:
    base, store = site
    login(page, base, "/sessions/trip")
    page.get_by_label("key", exact=True).fill("hotel")
    page.get_by_label("value", exact=True).fill("Alfama guesthouse")
    page.get_by_role("button", name="save context").click()
    expect(page.locator("body")).to_contain_text("Alfama guesthouse")
    assert "hotel" in {c.context_key for c in store.get_context("trip")}

    page.goto(f"{base}/users/bob")
    page.get_by_label("type bob to confirm").fill("bo")
    page.get_by_role("button", name="erase every row of bob").click()
    expect(page.get_by_role("alert")).to_contain_text("ValidationError")
    assert store.get_session("bob-s") is not None
    page.goto(f"{base}/users/bob")
    page.get_by_label("type bob to confirm").fill("bob")
    page.get_by_role("button", name="erase every row of bob").click()
    expect(page.locator(".note")).to_contain_text("Erased every row of user bob")
    assert store.get_user_sessions("bob") == []
    assert store.get_session("trip") is not None
