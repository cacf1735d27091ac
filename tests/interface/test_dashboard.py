"""The web dashboard in a real browser: Playwright drives Debian's Chromium (headless) against a
served app: connect with a key, browse cubes and sessions, search with the per-stage explanation,
open an item's history, reorganize and browse the topic tree, walk the graph around an item,
edit and delete it, and save a screenshot."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from mnemic import Memory, load_settings
from mnemic.client import Client
from mnemic.interface.rest.server import ThreadedServer

ADMIN = "dashboard-admin-key"


def chromium() -> str:
    path = os.environ.get("MNEMIC_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail("the dashboard test needs Chromium: apt-get install chromium (Debian)")
    return path


@pytest.fixture
def site(tmp_path: Path, embedder: object) -> Iterator[tuple[str, str]]:
    settings = load_settings(home=tmp_path / "dash", server={"admin_key": ADMIN})
    with (
        Memory(settings, embedder=embedder) as mem,  # type: ignore[arg-type]
        ThreadedServer(settings, memory=mem) as srv,
    ):
        with Client(srv.url, api_key=ADMIN) as admin:
            key = admin.create_user("ana")
        with Client(srv.url, api_key=key) as ana:
            ana.add(
                [
                    {"role": "ana", "content": "I adopted a cat called Miso."},
                    {"role": "ben", "content": "Lovely! I started pottery classes."},
                ],
                session_id="s1",
                timestamp="2024-03-10T10:00:00Z",
            )
            ana.add(
                "<img src=x onerror=document.title='owned'> is just text",
                session_id="s2",
                timestamp="2024-04-02T09:00:00Z",
            )
        yield srv.url, key


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(), headless=True, args=["--no-sandbox"]
        )
        tab = browser.new_page(viewport={"width": 1400, "height": 900})
        yield tab
        browser.close()


def test_dashboard_search_history_tree_edit_delete(
    site: tuple[str, str], page: Page, tmp_path: Path
) -> None:
    url, key = site
    page.goto(url + "/")  # redirects to /dashboard
    page.fill("#key", key)
    page.click("#connect")
    expect(page.locator("#who")).to_have_text("user ana")
    expect(page.locator(".item-row")).to_have_count(3)
    # memories are shown as text, never run as markup
    expect(page.locator("#memories")).to_contain_text("<img src=x")
    assert page.title() == "mnemic dashboard"

    # the tree: cube, then its sessions, then their memories
    expect(page.locator("[data-cube='ana/default']")).to_be_visible()
    page.locator(".session", has_text="s1").locator("span").first.click()
    expect(page.locator(".session", has_text="s1").locator("li")).to_have_count(2)

    # search with the per-stage explanation
    page.click("#tab-search")
    page.fill("#query", "what is the cat called")
    page.fill("#budget", "200")
    page.click("#search-btn")
    first = page.locator(".hit").first
    expect(first).to_contain_text("Miso")
    expect(first.locator(".why")).to_contain_text("rank")
    assert first.locator(".stage").count() >= 1
    expect(page.locator("#context")).to_contain_text("[10 March 2024]")

    # the topic tree the organizer built, and the graph around a memory
    page.click("#tab-topics")
    page.click("#reorganize")
    expect(page.locator("#topics .topic").first).to_be_visible()
    expect(page.locator("#topics-status")).not_to_contain_text("not placed")
    topic = page.locator("#topics .topic", has_text="Miso").first
    topic.locator(".topic-title").click()
    topic.locator(".topic-item", has_text="Miso").click()
    expect(page.locator("#links .link").first).to_be_visible()
    expect(page.locator("#graph .node").first).to_be_visible()
    before = page.locator("#detail-meta").text_content() or ""
    page.locator("#links .link").first.click()  # walks the graph to the linked memory
    expect(page.locator("#detail-meta")).not_to_have_text(before)
    page.click("#tab-search")

    # an item's history, then an edit that becomes a new version
    first.click()
    # the detail still shows the linked memory until the hit's has loaded: edit only then
    expect(page.locator("#edit-text")).to_have_value("I adopted a cat called Miso.")
    expect(page.locator("#history .ver")).to_have_count(1)
    expect(page.locator("#history .ver.add")).to_contain_text("by ana")
    page.fill("#edit-text", "I adopted a cat called Tofu.")
    page.click("#save")
    expect(page.locator("#detail-status")).to_have_text("saved")
    expect(page.locator("#history .ver")).to_have_count(2)
    expect(page.locator("#history .ver").nth(1)).to_contain_text("Tofu")

    page.click("#tab-charts")
    expect(page.locator("#growth-chart polyline")).to_have_count(1)
    expect(page.locator("#stage-chart rect").first).to_be_visible()
    page.click("#tab-timeline")
    expect(page.locator("#timeline .day")).to_have_count(2)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MNEMIC_ARTIFACTS"):
        shutil.copy(shot, Path(os.environ["MNEMIC_ARTIFACTS"]) / "dashboard.png")

    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    expect(page.locator("#detail-status")).to_have_text("deleted")
    expect(page.locator("#history .ver.delete")).to_have_count(1)
    expect(page.locator(".item-row")).to_have_count(2)
    assert page.title() == "mnemic dashboard"  # the stored markup never ran


def test_dashboard_admin_view_and_bad_key(site: tuple[str, str], page: Page) -> None:
    url, _ = site
    page.goto(url + "/dashboard")
    page.fill("#key", "mn_wrong")
    page.click("#connect")
    expect(page.locator("#error")).to_contain_text("not valid")
    page.fill("#key", ADMIN)
    page.click("#connect")
    expect(page.locator("#who")).to_have_text("admin")
    expect(page.locator("#users tbody tr")).to_have_count(1)
    page.fill("#new-user", "bob")
    page.click("#create-user")
    expect(page.locator("#new-key")).to_contain_text("key for bob (shown once): mn_")
    expect(page.locator("#users tbody tr")).to_have_count(2)
