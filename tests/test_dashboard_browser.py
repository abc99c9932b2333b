"""The dashboard in a real browser: Debian's headless Chromium, driven by selenium.

A worker fails one job for real; jobs wait in three more queues. The browser loads the
overview and reads each queue's counts, sees them change without a reload, opens the
failed job from the recent failures, retries it and pauses a queue with the buttons, and
saves a screenshot of the overview (``$PGTASKQ_ARTIFACTS``, default build/test-artifacts).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from worker_helpers import FAST, create_runs_table

from pgtaskq import TaskQueue
from pgtaskq.contrib.dashboard import Dashboard
from pgtaskq.contrib.dashboard.serve import make
from pgtaskq.testing import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no headless browser: apt-get install chromium chromium-driver",
                allow_module_level=True)
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'")
from selenium.webdriver.common.by import By  # noqa: E402

ARTIFACTS = Path(os.environ.get("PGTASKQ_ARTIFACTS", "build/test-artifacts"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")


@pytest.fixture
def chromium() -> Iterator[object]:
    profile = tempfile.mkdtemp(prefix="pgtaskq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def dashboard_url(tq: TaskQueue) -> Iterator[str]:
    server = make(Dashboard(tq, refresh=0.5), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_operator_uses_the_dashboard_in_chromium(
    tq: TaskQueue, db: psycopg.Connection, worker_process, chromium, dashboard_url: str
) -> None:
    create_runs_table(db, tq.schema)
    worker = worker_process("apps.basic:tq", "-c", "1", "-q", "failing", *FAST)
    worker.wait_ready()
    failed = tq.enqueue("fail", kwargs={"message": "<b>kaput</b>"}, queue="failing",
                        max_attempts=1)
    for queue, count in (("mail", 3), ("reports", 2), ("billing", 5)):
        tq.enqueue_many("noop", [{"args": [i], "queue": queue} for i in range(count)])
    wait_until(lambda: tq.get_job(failed).status == "failed", 20,  # type: ignore[union-attr]
               what="the worker failed the job")
    browser = chromium

    def ready(queue: str) -> str:
        # read in one script call: the refresh may replace the element between two calls
        return browser.execute_script(
            "var e = document.querySelector(arguments[0]); return e && e.textContent;",
            f'section[data-queue="{queue}"] dd.ready')

    browser.get(dashboard_url + "/")
    assert (ready("mail"), ready("reports"), ready("billing")) == ("3", "2", "5")
    browser.execute_script("window.pgtaskqNotReloaded = true")
    tq.enqueue("noop", queue="mail")
    wait_until(lambda: ready("mail") == "4", 10, what="the overview refreshed in place")
    assert browser.execute_script("return window.pgtaskqNotReloaded") is True
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-overview.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    first_failure = tq.get_job(failed).finished_at  # type: ignore[union-attr]
    browser.find_element(By.LINK_TEXT, str(failed)).click()
    wait_until(lambda: browser.current_url.endswith(f"/jobs/{failed}"), 10)
    assert "<b>kaput</b>" in browser.find_element(By.CSS_SELECTOR, "pre.error").text
    browser.find_element(By.CSS_SELECTOR, "button.retry").click()
    wait_until(lambda: "queued again" in browser.page_source, 10, what="retry notice")

    def failed_again() -> bool:
        job = tq.get_job(failed)
        return job is not None and job.status == "failed" and job.finished_at > first_failure

    wait_until(failed_again, 20, what="the retried job ran (and failed) again")

    browser.get(dashboard_url + "/")
    browser.find_element(By.CSS_SELECTOR, 'section[data-queue="billing"] button.pause').click()
    wait_until(lambda: "billing" in tq.paused_queues(), 10, what="billing paused")
    wait_until(lambda: browser.find_elements(
        By.CSS_SELECTOR, 'section[data-queue="billing"] button.resume'), 10)
    assert worker.stop() == 0
