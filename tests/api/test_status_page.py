"""The status page in headless Chromium (selenium + Debian's chromium/chromium-driver), served by
a real uvicorn on a free loopback port. A screenshot is kept in tests/artifacts/."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from api_support import EnvRepoShas, FakeEnqueue, canary, make_settings, unit
from argo_fakes import ArgoCDServer, application
from helpers import free_port

from meshgen.api import deps
from meshgen.api.app import PAGE_REFRESH_SECONDS, create_app
from meshgen.argocd.poller import poll_once
from meshgen.blueprint.loading import load_config
from meshgen.records import Records
from meshgen.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"



@pytest.fixture
def served(settings: Settings, records: Records, argo: ArgoCDServer, env_repo: EnvRepoShas) -> Iterator[str]:
    records.save_unit(unit(service="api", pr_state="merged", merge=env_repo.merge, head=env_repo.branch))
    records.save_unit(unit(env="production", service="api", pr_state="open", number=2))
    records.save_unit(unit(service="search", namespace="search", team="search", pr_state="merged",
                           merge=env_repo.merge, head=env_repo.branch, number=3))
    records.save_unit(unit(env="production", service="search", namespace="search", team="search",
                           render_state="render-failed", render_error="blueprints/search/search.yaml:4:3: bad"))
    records.save_unit(unit(service="_mesh", namespace="", team=None, up_to_date=True))
    records.save_unit(unit(service="_namespace", namespace="payments", up_to_date=True))
    # Text from outside (a gate name, a reason quoting a query) is escaped, never markup.
    records.save_canary(canary(reason='waiting <b id="injected">2m</b> after the merge'))
    argo.put(application("api-staging", revision=env_repo.later))
    argo.put(application("search-staging", revision=env_repo.later, health="Degraded",
                         health_message="Deployment search has 0/3 ready replicas"))
    assert poll_once(load_config(settings.root)[0], settings, records).ok
    public = make_settings(settings.root, records.prefix, api_public_reads=True)
    app = create_app(public)
    app.dependency_overrides[deps.get_enqueue] = lambda: FakeEnqueue(records)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the status-page test needs headless Chromium; {', '.join(missing)} not found. "
                    f"Install it with: {INSTALL}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_status_page(served: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served + "/")
    assert "meshgen rollouts" in browser.title
    refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute("content")
    assert refresh == str(PAGE_REFRESH_SECONDS)
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#rollouts thead th")]
    assert headers == ["namespace / service", "staging", "production"]  # meshgen.yaml's order

    def cell(service: str, env: str) -> Any:
        return browser.find_element(By.CSS_SELECTOR, f'tr[data-service="{service}"] td[data-env="{env}"]')

    healthy = cell("payments/api", "staging")
    assert healthy.get_attribute("data-state") == "healthy"
    assert healthy.find_element(By.CSS_SELECTOR, ".badge").text == "healthy"
    assert healthy.find_element(By.CSS_SELECTOR, "a").get_attribute("href") == "https://git.example.com/env/pulls/1"
    assert "api-staging: Healthy / Synced" in healthy.text and "s ago" in healthy.text
    review = cell("payments/api", "production")
    assert review.get_attribute("data-state") == "awaiting-review" and "#2" in review.text
    degraded = cell("search/search", "staging")
    assert degraded.get_attribute("data-state") == "degraded" and "Degraded" in degraded.text
    assert "0/3 ready replicas" in degraded.get_attribute("title")
    failed = cell("search/search", "production")
    assert failed.get_attribute("data-state") == "render-failed"
    # The reason is text on the page, not only a tooltip: a render failure shows its file:line.
    assert "blueprints/search/search.yaml:4:3: bad" in failed.find_element(By.CSS_SELECTOR, ".reason").text
    assert "#2 waits for review" in review.find_element(By.CSS_SELECTOR, ".reason").text
    box = healthy.find_element(By.CSS_SELECTOR, ".canary")
    assert box.get_attribute("data-phase") == "measuring"
    assert box.find_element(By.CSS_SELECTOR, ".canary-progress").text == "step 2 of 3 · 50%"
    assert "v1 → v2" in box.text and box.find_element(By.CSS_SELECTOR, ".canary-phase").text == "measuring"
    assert box.find_element(By.CSS_SELECTOR, "progress").get_attribute("value") == "50"
    assert box.find_element(By.CSS_SELECTOR, ".canary-reason").text == 'waiting <b id="injected">2m</b> after the merge'
    assert not browser.find_elements(By.ID, "injected")
    gates = {li.get_attribute("data-gate"): li for li in box.find_elements(By.CSS_SELECTOR, ".gates li")}
    assert gates["successRate"].text == "successRate: 99.5 (needs >= 99%) ✔"
    assert gates["successRate"].get_attribute("class") == "gate-ok"
    assert gates["latencyP99"].text == "latencyP99: no data (needs <= 500ms) ?"
    assert not review.find_elements(By.CSS_SELECTOR, ".canary")  # production has no canary
    labels = {tr.get_attribute("data-service"): tr.find_element(By.CSS_SELECTOR, "td").text
              for tr in browser.find_elements(By.CSS_SELECTOR, "#rollouts tbody tr")}
    assert labels["/_mesh"] == "mesh-wide" and labels["payments/_namespace"].startswith("namespace-wide")
    assert "Argo CD data" in browser.find_element(By.ID, "argocd-age").text

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000

    # The team filter is a plain GET form: no JavaScript involved.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "team")).select_by_value("search")
    browser.find_element(By.CSS_SELECTOR, "#team-filter button").click()
    deadline = time.monotonic() + 10
    while "team=search" not in browser.current_url:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rows = [tr.get_attribute("data-service") for tr in browser.find_elements(By.CSS_SELECTOR, "#rollouts tbody tr")]
    assert rows == ["search/search"]
    assert Select(browser.find_element(By.ID, "team")).first_selected_option.get_attribute("value") == "search"
    browser.save_screenshot(str(ARTIFACTS / "status_page_team_search.png"))


def test_the_suite_installs_chromium() -> None:
    # scripts/test (what .ci/run calls) installs what the failure message above names.
    script = (Path(__file__).resolve().parents[2] / "scripts" / "test").read_text()
    assert "apt-get install -y -qq chromium chromium-driver" in script
