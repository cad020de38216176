#!/usr/bin/env python3
"""Browser test of the fedcsg live dashboard (headless Chromium through Selenium).

Run by a Rust test that has started a real coordinator with `--dashboard-listen`, an admin
token, and a real job with workers. It checks:

  1. the JSON API over plain HTTP: /api/overview answers 401 without a token and with a wrong
     one, 200 with the right one (listing the job); the page and its assets need no token;
  2. in the browser: the page asks for the token and shows no jobs before it gets one; a wrong
     token brings the form back with the server's reason; the right token opens the dashboard;
  3. the job's row appears and clicking it selects it; then (up to 180 s) at least one round
     row, at least one accuracy chart point and at least one worker row appear for that job;
  4. a screenshot is saved, and one JSON line with the counts is printed.

Env:   FEDCSG_DASHBOARD_URL  the dashboard, e.g. http://127.0.0.1:43123/
       FEDCSG_ADMIN_TOKEN    the coordinator's admin token
       FEDCSG_JOB_ID         the job to look for
       FEDCSG_ARTIFACT_DIR   where the screenshots go (created if missing)
       CHROMIUM, CHROMEDRIVER  browser and driver (default /usr/bin/chromium, /usr/bin/chromedriver)
Needs: pip install selenium (4.x); Debian's chromium and chromium-driver. Nothing is downloaded:
       the driver path is given explicitly, so Selenium Manager never runs.
Exits 0 on success, 1 on a failed check (with the reason, the page's status line and the
browser console log).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PAGE_TIMEOUT_S = 30
DATA_TIMEOUT_S = 180
HTTP_TIMEOUT_S = 15

JOB_ROWS = "table#jobs tr.job-row"
ROUND_ROWS = "table#rounds tr.round-row"
ACCURACY_POINTS = "svg#chart-accuracy circle.point"
WORKER_ROWS = "table#workers tr.worker-row"


class CheckFailed(Exception):
    """A check of this test failed; the message says which and why."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    check(bool(value), f"environment variable {name} is not set")
    return value


def http_get(url: str, token: str | None = None) -> tuple[int, str, bytes]:
    """GET url; returns (status, content type, body) for any HTTP status."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()
    except (urllib.error.URLError, OSError) as err:
        raise CheckFailed(f"GET {url}: cannot connect: {err}") from err


def check_http(base: str, token: str, job_id: str) -> None:
    overview = urllib.parse.urljoin(base, "api/overview")
    for label, sent in (("without a token", None), ("with a wrong token", token + "-wrong")):
        status, _, body = http_get(overview, sent)
        check(status == 401, f"GET /api/overview {label}: expected 401, got {status}: {body[:200]!r}")
        try:
            error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            error = None
        check(isinstance(error, str) and error != "",
              f"GET /api/overview {label}: the 401 body is not {{\"error\": \"...\"}}: {body[:200]!r}")

    status, _, body = http_get(overview, token)
    check(status == 200, f"GET /api/overview with the admin token: expected 200, got {status}: {body[:200]!r}")
    try:
        jobs = json.loads(body)["jobs"]
        ids = [job["id"] for job in jobs]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckFailed(f"GET /api/overview: unexpected body ({err}): {body[:300]!r}") from err
    check(job_id in ids, f"GET /api/overview: job {job_id} is not among the jobs {ids}")

    status, ctype, body = http_get(base)
    check(status == 200, f"GET / without a token: expected 200, got {status}")
    check("text/html" in ctype, f"GET /: expected an HTML content type, got {ctype!r}")
    check(b"<html" in body.lower(), "GET /: the body is not an HTML page")
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        status, ctype, _ = http_get(urllib.parse.urljoin(base, asset))
        check(status == 200 and kind in ctype, f"GET /{asset} without a token: got {status} {ctype!r}")
    print(f"http: API answers 401 without / with a wrong token, 200 with it; job {job_id} listed")


def start_browser() -> webdriver.Chrome:
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    chromedriver = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
    check(Path(chromium).is_file(), f"no Chromium at {chromium} (set CHROMIUM)")
    check(Path(chromedriver).is_file(), f"no chromedriver at {chromedriver} (set CHROMEDRIVER)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager is skipped and nothing is downloaded.
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def count(driver: webdriver.Chrome, selector: str) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, selector))


def text_of(driver: webdriver.Chrome, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else f"<no {selector}>"


def displayed(driver: webdriver.Chrome, selector: str) -> bool:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return bool(found) and found[0].is_displayed()


def wait(driver: webdriver.Chrome, timeout: float, condition, message) -> object:
    """Waits for condition(driver); on timeout fails with message() (evaluated then)."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        raise CheckFailed(f"{message()} (waited {timeout:.0f} s; page status: {text_of(driver, '#status')!r})") from None


def submit_token(driver: webdriver.Chrome, token: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, "input#token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-submit").click()


def click_and_check_selected(driver: webdriver.Chrome, row: str) -> None:
    # Rows are updated in place, but retry the click should one be replaced meanwhile.
    wait(driver, PAGE_TIMEOUT_S, lambda d: d.find_element(By.CSS_SELECTOR, row).click() or True,
         lambda: f"cannot click the job row {row}")
    wait(driver, PAGE_TIMEOUT_S,
         lambda d: "selected" in (d.find_element(By.CSS_SELECTOR, row).get_attribute("class") or "").split(),
         lambda: f"the clicked job row has no class 'selected': "
                 f"{driver.find_element(By.CSS_SELECTOR, row).get_attribute('class')!r}")


def counts(driver: webdriver.Chrome, job_id: str) -> dict[str, int]:
    return {
        "job_row": count(driver, f'{JOB_ROWS}[data-job-id="{job_id}"]'),
        "job_rows": count(driver, JOB_ROWS),
        "round_rows": count(driver, ROUND_ROWS),
        "accuracy_points": count(driver, ACCURACY_POINTS),
        "worker_rows": count(driver, WORKER_ROWS),
    }


def check_browser(driver: webdriver.Chrome, base: str, token: str, job_id: str, artifacts: Path) -> dict:
    driver.get(base)
    wait(driver, PAGE_TIMEOUT_S, lambda d: displayed(d, "#token-form"),
         lambda: "the token form #token-form is not shown although the coordinator requires a token")
    check(count(driver, JOB_ROWS) == 0, "job rows are shown before the admin token was given")
    check("token" in text_of(driver, "#auth-message").lower(),
          f"#auth-message does not explain that a token is needed: {text_of(driver, '#auth-message')!r}")
    print("browser: token form shown, no job rows")

    submit_token(driver, token + "-wrong")
    wait(driver, PAGE_TIMEOUT_S,
         lambda d: displayed(d, "#token-form") and "refused" in text_of(d, "#auth-message"),
         lambda: f"a wrong token did not bring the form back with a message; #auth-message: "
                 f"{text_of(driver, '#auth-message')!r}")
    check(count(driver, JOB_ROWS) == 0, "job rows are shown after a wrong token")
    print(f"browser: wrong token refused: {text_of(driver, '#auth-message')!r}")

    submit_token(driver, token)
    wait(driver, PAGE_TIMEOUT_S, lambda d: not displayed(d, "#token-form"),
         lambda: f"the right token did not open the dashboard; #auth-message: {text_of(driver, '#auth-message')!r}")

    row = f'{JOB_ROWS}[data-job-id="{job_id}"]'
    wait(driver, DATA_TIMEOUT_S, lambda d: count(d, row) == 1,
         lambda: f"no job row {row} appeared; job rows: {count(driver, JOB_ROWS)}")
    # Select the job first (another job may be the default selection), so that the rounds and
    # chart points counted below are this job's.
    click_and_check_selected(driver, row)

    def ready(d):
        c = counts(d, job_id)
        ok = (c["job_row"] == 1 and c["round_rows"] >= 1 and c["accuracy_points"] >= 1
              and c["worker_rows"] >= 1 and job_id in text_of(d, "#job-title"))
        return c if ok else False

    wait(driver, DATA_TIMEOUT_S, ready,
         lambda: f"the dashboard did not fill in for {job_id}: {counts(driver, job_id)}, "
                 f"#job-title {text_of(driver, '#job-title')!r} (need >= 1 round row, >= 1 accuracy point, "
                 f">= 1 worker row)")
    # Clicking the selected job's row keeps it selected, with the data in place.
    click_and_check_selected(driver, row)

    errors = [e for e in browser_log(driver) if e.get("level") == "SEVERE" and e.get("source") == "javascript"]
    check(not errors, f"the page raised JavaScript errors: {errors}")

    screenshot = artifacts / "dashboard.png"
    check(driver.save_screenshot(str(screenshot)), f"cannot save the screenshot to {screenshot}")
    found = counts(driver, job_id)
    del found["job_row"]
    found["screenshot"] = str(screenshot)
    return found


def browser_log(driver: webdriver.Chrome) -> list[dict]:
    try:
        return driver.get_log("browser")
    except Exception:  # noqa: BLE001 - the log is a diagnostic; not every driver offers it
        return []


def main() -> int:
    try:
        base = env("FEDCSG_DASHBOARD_URL")
        if not base.endswith("/"):
            base += "/"
        token = env("FEDCSG_ADMIN_TOKEN")
        job_id = env("FEDCSG_JOB_ID")
        artifacts = Path(env("FEDCSG_ARTIFACT_DIR"))
        artifacts.mkdir(parents=True, exist_ok=True)
        check_http(base, token, job_id)
    except CheckFailed as err:
        print(f"FAIL: {err}", file=sys.stderr)
        return 1

    driver = None
    try:
        driver = start_browser()
        result = check_browser(driver, base, token, job_id, artifacts)
        print(json.dumps(result))
        return 0
    except Exception as err:
        if isinstance(err, CheckFailed):
            print(f"FAIL: {err}", file=sys.stderr)
        else:
            print(f"FAIL: unexpected error: {err!r}", file=sys.stderr)
            traceback.print_exc()
        if driver is not None:
            failure = artifacts / "dashboard-failure.png"
            try:
                driver.save_screenshot(str(failure))
                print(f"failure screenshot: {failure}", file=sys.stderr)
            except Exception as shot_err:  # noqa: BLE001
                print(f"(no failure screenshot: {shot_err!r})", file=sys.stderr)
            for entry in browser_log(driver):
                print(f"browser console: {entry.get('level')} {entry.get('message')}", file=sys.stderr)
        return 1
    finally:
        if driver is not None:
            driver.quit()


if __name__ == "__main__":
    sys.exit(main())
