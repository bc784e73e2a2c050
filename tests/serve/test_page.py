"""The chat page in headless Chromium (Debian's package; CI installs it): a question sent from the page gets
its streamed answer, with the reasoning in a collapsible block apart from it."""

import shutil

import pytest
from scripted import ANSWER, API_KEY, REASONING

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a sandbox-less container with no network beyond loopback (background fetches would be refused).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_page_shows_the_reasoning_apart_from_the_answer(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#api-key", API_KEY)
            page.dispatch_event("#api-key", "change")
            page.wait_for_function("document.getElementById('model').textContent === 'tiny'", timeout=30_000)
            page.fill("#prompt", "What is two plus two?")
            page.press("#prompt", "Enter")
            page.wait_for_selector(".assistant[data-done='true']", timeout=60_000)
            assert page.inner_text(".user") == "What is two plus two?"
            assert page.inner_text(".assistant .answer") == ANSWER
            reasoning = page.locator(".assistant details.reasoning")
            assert reasoning.evaluate("d => d.open") is False  # collapsed once the answer came
            reasoning.locator("summary").click()
            assert reasoning.locator("div").inner_text() == REASONING
            page.screenshot(path=str(tmp_path / "chat.png"))
            assert (tmp_path / "chat.png").stat().st_size > 1000
        finally:
            browser.close()
