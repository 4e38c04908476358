"""The local forge in the browser (issue 10, item 8): /prs and /prs/{n} in headless Chromium, served by a
real uvicorn, on a real environment repository synced from real blueprints, with records in Redis."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from api_support import TOKENS, make_settings
from click.testing import CliRunner
from helpers import free_port
from test_status_page import browser  # noqa: F401  (the Chromium fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sync_support import make_root  # noqa: E402

from meshgen.api.app import create_app  # noqa: E402
from meshgen.gitops.commands import pr as pr_command  # noqa: E402
from meshgen.forges.local import LocalForge  # noqa: E402
from meshgen.gitops.sync import sync_repository  # noqa: E402
from meshgen.records import Records  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path: Path, prefix: str, redis_client: Any) -> Iterator[tuple[str, Path, Records]]:
    root = make_root(tmp_path / "bp", ["cart", "checkout"])
    settings = make_settings(root, prefix)
    records = Records(redis_client, prefix)
    sync_repository(root, settings, records=records)
    forge = LocalForge(root / ".meshgen" / "env-repo")
    cart = next(p for p in forge.list("open") if p.branch.endswith("/cart"))
    # A description with HTML and markdown in it: shown, never run.
    forge.update(cart.number, title=cart.title, labels=cart.labels,
                 body=cart.body + "\n\n<script>document.title='pwned'</script> **bold** [x](javascript:alert(1))\n")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}", root, records
    server.should_exit = True
    thread.join(10)


def _login(browser: Any, base: str, token: str, next_: str) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(f"{base}{next_}")
    assert "/login" in browser.current_url  # no token yet: asked for one
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    deadline = time.monotonic() + 10
    while not browser.current_url.endswith(next_):
        assert time.monotonic() < deadline, browser.current_url
        time.sleep(0.05)
    _wait(browser, "#title, #prs, #empty")


def _wait(browser: Any, css: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def test_pr_pages_read_merge_and_status_link(world: tuple[str, Path, Records], browser: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    base, root, records = world
    forge = LocalForge(root / ".meshgen" / "env-repo")
    cart = next(p for p in forge.list("open") if p.branch.endswith("/cart"))
    _login(browser, base, TOKENS["read"], "/prs")
    rows = browser.find_elements(By.CSS_SELECTOR, "#prs tbody tr")
    assert {r.get_attribute("data-state") for r in rows} == {"open"} and len(rows) == 2
    browser.find_element(By.CSS_SELECTOR, f'tr[data-number="{cart.number}"] a').click()
    _wait(browser, "#title")
    assert browser.find_element(By.ID, "title").text.startswith(cart.title)
    assert browser.find_element(By.ID, "state").text == "open"
    description = browser.find_element(By.ID, "description")
    assert "<script>" in description.text and browser.title != "pwned"  # escaped, not run
    assert "bold" in [e.text for e in description.find_elements(By.TAG_NAME, "strong")]
    assert not [a for a in description.find_elements(By.TAG_NAME, "a")
                if (a.get_attribute("href") or "").startswith("javascript:")]
    assert "VirtualService shop/cart" in browser.find_element(By.ID, "semantic").text
    patch = browser.find_element(By.ID, "patch").text
    assert "production/shop/cart/virtualservice-cart.yaml" in patch and "+  " in patch
    assert not browser.find_elements(By.ID, "actions")  # a read token sees no buttons

    # A write token: Merge and Close; Merge merges, and the status page links here.
    _login(browser, base, TOKENS["write"], f"/prs/{cart.number}")
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    browser.find_element(By.ID, "merge").click()

    def state() -> str:
        try:
            return str(browser.find_element(By.ID, "state").text)
        except (NoSuchElementException, StaleElementReferenceException):
            return ""  # the page is being replaced by the answer to the post

    deadline = time.monotonic() + 10
    while state() != "merged":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not browser.find_elements(By.ID, "actions")  # merged: nothing left to do
    assert forge.get(cart.number).state == "merged"
    unit = records.get_unit("production", "shop", "cart")
    assert unit is not None and unit.pr is not None and unit.pr.state == "merged"
    browser.get(f"{base}/")
    _wait(browser, "#rollouts")
    cell = browser.find_element(By.CSS_SELECTOR, 'tr[data-service="shop/cart"] td[data-env="production"]')
    assert cell.get_attribute("data-state") == "awaiting-sync"
    assert cell.find_element(By.TAG_NAME, "a").get_attribute("href") == f"{base}/prs/{cart.number}"

    # Forged posts: without the CSRF token, from another site, or with a read token.
    checkout = next(p for p in forge.list("open") if p.branch.endswith("/checkout"))
    with httpx.Client(base_url=base, cookies={"meshgen_token": TOKENS["write"]}) as http:
        assert http.post(f"/prs/{checkout.number}/close", data={"csrf": "nope"}).status_code == 403
        assert http.post(f"/prs/{checkout.number}/close", data={}, headers={"Origin": "https://evil.example"}
                         ).status_code == 403
    with httpx.Client(base_url=base, cookies={"meshgen_token": TOKENS["read"]}) as http:
        assert http.post(f"/prs/{checkout.number}/close", data={"csrf": "x"}).status_code == 403
    assert forge.get(checkout.number).state == "open"


def test_pr_show_diff_prints_the_yaml_diff(world: tuple[str, Path, Records]) -> None:
    _, root, _ = world
    forge = LocalForge(root / ".meshgen" / "env-repo")
    cart = next(p for p in forge.list("open") if p.branch.endswith("/cart"))
    out = CliRunner().invoke(pr_command, ["--repo", str(root / ".meshgen" / "env-repo"), "show", str(cart.number),
                                          "--diff"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("diff --git a/production/shop/cart/")
    assert "+    app.kubernetes.io/managed-by: meshgen" in out.output
