"""The leaderboard in a real headless browser (Debian's chromium + chromedriver, driven by selenium):
no console errors, sorting reorders rows, filtering hides rows, a `<script>` model name is text.

Chromium missing is a FAILURE (CI must install it: `make install` does); set COLLAPSE_BENCH_NO_BROWSER=1
to skip on a machine that cannot have a browser.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from leaderboard_helpers import submissions_tree

from collapse_bench.leaderboard import site
from collapse_bench.leaderboard.entry import Entry, entries_from
from collapse_bench.leaderboard.validate import validate_paths

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]
EVIL = "<script>window.__pwned=1</script>"


@pytest.fixture(scope="module")
def driver():
    if os.environ.get("COLLAPSE_BENCH_NO_BROWSER") == "1":
        pytest.skip("COLLAPSE_BENCH_NO_BROWSER=1: browser test skipped on request")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() or shutil.which(Path(p).name))]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install with `apt-get install -y chromium chromium-driver` "
            "(make install does) or set COLLAPSE_BENCH_NO_BROWSER=1 to skip",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="collapse-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver"))
    drv = webdriver.Chrome(service=service, options=options)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    subs = root / "submissions"
    submissions_tree(subs)
    entries = entries_from(validate_paths([subs]).ok, subs)
    evil = copy.deepcopy(entries[0].doc)  # the validator refuses this name; the site must still be safe
    evil["model"]["name"] = EVIL
    site.render([*entries[1:], Entry(entries[0].id, evil)], root / "lb")
    return root / "lb"


def severe(drv) -> list[str]:
    return [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def column(drv, table: str, header: str) -> list[str]:
    heads = [th.text.strip() for th in drv.find_elements("css selector", f"#{table} thead th")]
    idx = heads.index(header) + 1
    return [td.get_attribute("data-v") for td in drv.find_elements("css selector", f"#{table} tbody tr td:nth-child({idx})")]


def test_index_loads_sorts_filters_and_escapes(driver, site_dir: Path) -> None:
    driver.get((site_dir / "index.html").as_uri())
    assert driver.title == "collapse-bench leaderboard"
    assert severe(driver) == []
    assert driver.execute_script("return window.__pwned === undefined")
    names = [a.text for a in driver.find_elements("css selector", "#models-table tbody td a")]
    assert EVIL in names  # shown as text
    # sorting by the v1 composite (these probe-only rows have no score): ascending, then descending, by the values
    head = next(th for th in driver.find_elements("css selector", "#models-table thead th") if th.text.strip() == "composite v1")
    initial = [float(v) for v in column(driver, "models-table", "composite v1")]
    assert len(set(initial)) == len(initial) > 1  # distinct values: the order is observable
    head.click()
    asc = [float(v) for v in column(driver, "models-table", "composite v1")]
    assert asc == sorted(initial)
    head.click()
    assert [float(v) for v in column(driver, "models-table", "composite v1")] == sorted(initial, reverse=True)
    model_head = next(th for th in driver.find_elements("css selector", "#models-table thead th") if th.text.strip() == "model")
    model_head.click()
    shown = [a.text for a in driver.find_elements("css selector", "#models-table tbody td a")]
    assert shown == sorted(shown, key=str.lower)
    # filtering hides rows
    box = driver.find_element("css selector", "input.filter[data-table=models-table]")
    box.send_keys("tiny-sft-reg")
    visible = [r for r in driver.find_elements("css selector", "#models-table tbody tr") if r.is_displayed()]
    assert len(visible) == 1 and "tiny-sft-reg" in visible[0].text
    box.clear()
    box.send_keys("x")  # clear() fires no input event; type and delete
    box.send_keys("\b")
    assert sum(r.is_displayed() for r in driver.find_elements("css selector", "#models-table tbody tr")) == 3
    assert severe(driver) == []


def test_model_pages_load_with_plots(driver, site_dir: Path) -> None:
    for page in sorted((site_dir / "models").glob("*.html")):
        driver.get(page.as_uri())
        assert severe(driver) == []
        assert driver.execute_script("return window.__pwned === undefined")
        imgs = driver.find_elements("css selector", "img.plot")
        assert imgs and all(
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in imgs
        )
