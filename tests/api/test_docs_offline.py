"""/docs works with no network: Swagger UI's assets come from meshgen itself (the fastapi-offline
package), checked in headless Chromium whose DNS resolves nothing but loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from api_support import make_settings
from fastapi.testclient import TestClient
from helpers import free_port, wait_for
from test_status_page import CHROMEDRIVER, CHROMIUM, INSTALL

from meshgen.api.app import DOCS_ASSETS, create_app


@pytest.fixture
def app(tmp_path: Path, prefix: str) -> Any:
    (tmp_path / "meshgen.yaml").write_text("environments: {staging: {}}\n")
    return create_app(make_settings(tmp_path, prefix))


def test_docs_pages_reference_only_local_assets(app: Any) -> None:
    client = TestClient(app)
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "https://" not in html and "http://" not in html, page
        assert f"{DOCS_ASSETS}/" in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
        res = client.get(f"{DOCS_ASSETS}/{asset}")
        assert res.status_code == 200 and len(res.content) > 1000, asset


@pytest.fixture
def served(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def offline_browser() -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the /docs test needs headless Chromium; {', '.join(missing)} not found. Install it with: "
                    f"{INSTALL}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 # No name resolves except loopback: a CDN script would fail to load.
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_docs_render_in_a_browser_without_network(served: str, offline_browser: Any) -> None:
    from selenium.webdriver.common.by import By

    offline_browser.get(f"{served}/docs")
    title = wait_for(lambda: offline_browser.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"), 20,
                     "Swagger UI to render the API title")
    assert "meshgen rollout API" in title[0].text  # type: ignore[index]
    wait_for(lambda: any("/api/v1/rollouts" in e.text for e in
                         offline_browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")), 20,
             "the operations from /openapi.json")
    loaded = offline_browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(served) for url in loaded), loaded
