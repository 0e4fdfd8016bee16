"""The dashboard in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium, against a live worker.

Screenshots go to ``tmp/artifacts/`` (``BACKSTAGE_ARTIFACTS`` overrides);
with ``BACKSTAGE_UPDATE_DOCS=1`` the main pages are also saved under
``docs/`` for the README. Skipped only when chromium is absent and not on
CI (``.ci/run`` installs it, so there they always run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import redis

from backstage import Client

from .helpers import wait_until
from .test_dashboard import _dead_letter, start_dashboard  # noqa: F401  (fixture)

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("BACKSTAGE_ARTIFACTS") or ROOT / "tmp" / "artifacts")

if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} or {DRIVER} is missing on CI: .ci/run installs chromium and chromium-driver")
    pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="bt-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(flag)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shot(driver: Any, name: str, docs: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    if docs and os.environ.get("BACKSTAGE_UPDATE_DOCS"):
        (ROOT / "docs").mkdir(exist_ok=True)
        driver.save_screenshot(str(ROOT / "docs" / f"dashboard-{name}.png"))


def cell(driver: Any, queue: str, col: str) -> str:
    # one script call reads it atomically: the live refresh swaps the table under Selenium's feet
    return str(driver.execute_script(
        "var e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : '';",
        f'tr[data-queue="{queue}"] td[data-col="{col}"]'))


def test_overview_updates_live_and_main_pages(browser: Any, start_worker: Any, start_dashboard: Any,
                                              client: Client, r: redis.Redis, prefix: str) -> None:
    w = start_worker("-c", "2", "--history", "1000", env={"BT_CRON_MINUTELY": "1"})
    wait_until(lambda: client.workers(), 15, message=lambda: w.log())
    for i in range(5):
        client.enqueue("record", {"n": i}, result_ttl=600)
    job = client.enqueue("fail", {"n": "x"}, result_ttl=600)
    for i in range(3):
        client.enqueue("record", {"report": i}, queue="reports")  # nobody serves it
        client.enqueue("record", {"later": i}, queue="reports", delay=3600)
    wait_until(lambda: r.xlen(f"{prefix}:default:dead-letter") == 1, 20, message=lambda: w.log())
    d = start_dashboard("--allow-actions")

    browser.get(d.base + "/")
    assert cell(browser, "reports", "length") == "3"
    browser.execute_script("window.__notReloaded = true;")
    for i in range(4):
        client.enqueue("record", {"report": 10 + i}, queue="reports")
    wait_until(lambda: cell(browser, "reports", "length") == "7", 15, message="the overview to show 7 queued")
    assert browser.execute_script("return window.__notReloaded === true;"), "the page was reloaded"
    wait_until(lambda: browser.execute_script("return document.querySelectorAll('svg.chart rect.ok').length"), 15)
    shot(browser, "overview", docs=True)

    browser.get(d.base + "/queues/reports")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")) == 7
    shot(browser, "queue", docs=True)
    browser.get(d.base + "/queues/reports?view=scheduled")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")) == 3
    browser.get(d.base + f"/jobs/{job}")
    assert "dead" in browser.find_element(By.ID, "status").text
    assert "ValueError" in browser.find_element(By.ID, "history").text
    shot(browser, "job", docs=True)
    browser.get(d.base + "/jobs")
    shot(browser, "jobs", docs=True)
    browser.get(d.base + "/workers")
    assert client.workers()[0]["consumer"] in browser.find_element(By.ID, "workers").text
    shot(browser, "workers", docs=True)
    browser.get(d.base + "/cron")
    assert "minutely" in browser.find_element(By.ID, "cron").text
    shot(browser, "cron", docs=True)


def test_dead_letter_found_requeued_by_clicking_and_runs(browser: Any, start_worker: Any, start_dashboard: Any,
                                                        client: Client, r: redis.Redis, prefix: str) -> None:
    w = start_worker("-c", "1")
    _dead_letter(r, prefix, "default", 30, "disk full")
    r.xadd(f"{prefix}:default:dead-letter", {
        "taskName": "record", "payload": orjson.dumps({"rescued": True}), "enqueuedAt": "1", "originalId": "1-0",
        "deliveryCount": "3", "queue": f"{prefix}:default", "reason": "failed", "errorType": "OSError",
        "errorMessage": "the flux capacitor melted", "traceback": "Traceback: ..."})
    d = start_dashboard("--allow-actions")
    browser.get(d.base + "/dead?queue=default")
    assert len(browser.find_elements(By.CSS_SELECTOR, "input.pick")) == 31
    box = browser.find_element(By.ID, "text")
    box.send_keys("flux capacitor")
    browser.find_element(By.ID, "search").click()
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "input.pick")) == 1, 10)
    assert "the flux capacitor melted" in browser.find_element(By.ID, "rows").text
    shot(browser, "dead-letters", docs=True)
    browser.find_element(By.CSS_SELECTOR, "input.pick").click()
    browser.find_element(By.ID, "requeue-selected").click()
    wait_until(lambda: browser.find_elements(By.ID, "confirm"), 10)
    assert "Requeue 1 dead letter" in browser.find_element(By.TAG_NAME, "h1").text
    shot(browser, "confirm")
    browser.find_element(By.ID, "confirm").click()
    wait_until(lambda: browser.find_elements(By.ID, "result"), 10)
    assert "Requeued 1 of 1" in browser.find_element(By.ID, "result").text
    wait_until(lambda: any(orjson.loads(x)["payload"] == {"rescued": True}
                           for x in r.lrange(f"{prefix}:ledger", 0, -1)), 15, message=lambda: w.log())
    assert r.xlen(f"{prefix}:default:dead-letter") == 30


def test_pausing_a_queue_from_the_workers_page_stops_its_fetching(browser: Any, start_worker: Any,
                                                                   start_dashboard: Any, client: Client,
                                                                   r: redis.Redis, prefix: str) -> None:
    w = start_worker("-c", "1")
    wait_until(lambda: client.workers(), 15, message=lambda: w.log())
    d = start_dashboard("--allow-actions")
    browser.get(d.base + "/workers")
    browser.find_element(By.ID, "pause-default").click()
    wait_until(lambda: browser.find_elements(By.ID, "result"), 10)
    wait_until(lambda: "default" in client.workers()[0].get("paused", []), 10, message=lambda: w.log())
    held = client.enqueue("record", {"held": True})
    client.enqueue("record", {"low": True}, priority="low")
    ledger = lambda: [orjson.loads(x)["payload"] for x in r.lrange(f"{prefix}:ledger", 0, -1)]  # noqa: E731
    wait_until(lambda: {"low": True} in ledger(), 15, message=lambda: w.log())
    # the low job, enqueued after it, ran; the paused queue's job was not even fetched
    assert {"held": True} not in ledger()
    assert r.xlen(f"{prefix}:default") == 1 and int(r.xpending(f"{prefix}:default", "backstage-workers")["pending"]) == 0
    browser.get(d.base + "/workers")
    assert "paused" in browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="default"]').text
    shot(browser, "workers-paused")
    browser.find_element(By.ID, "resume-default").click()
    wait_until(lambda: {"held": True} in ledger(), 15, message=lambda: w.log())
    assert held
