"""Headless Chromium from Debian (``chromium`` and ``chromium-driver``), driven by Selenium, for the
end-to-end tests of « Mon DMP ».

The browser is the system's, never a download of the test tool's own (which fails here): Selenium is
given both paths, so its driver manager stays idle. ``tests/install_browser.sh`` installs them, and
the README's test command runs it first. Without them the browser tests are skipped on a developer's
machine and fail in CI, where they must run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.paths import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Where a run leaves its screenshots (git-ignored); a few are copied into docs/portal/ by hand.
SCREENSHOTS = ROOT / "build" / "screenshots" / "portal"
DESKTOP = (1280, 900)
PHONE = (390, 844)

T = TypeVar("T")


def chromium(profile: Path, downloads: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium on a fresh profile, downloading into ``downloads``, quit afterwards."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = f"{CHROMIUM} and {CHROMEDRIVER} are needed: run tests/install_browser.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--lang=fr-FR",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.implicitly_wait(0)
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, name: str, size: tuple[int, int] = DESKTOP) -> Path:
    """The whole page as it is now, at ``size`` (its full height), saved as ``name``.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(*size)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(size[0], max(size[1], min(height + 140, 4000)))
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(*DESKTOP)
    return path


def wait_for(what: Callable[[], T | None], description: str, timeout: float = 60.0) -> T:
    """Poll until ``what`` gives something: a page loading, a download finishing (generous: the
    machine may be busy; a wait that ends early costs nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited in vain for {description}")
        time.sleep(0.1)


def text_of(driver: webdriver.Chrome) -> str:
    """The page's text; empty while the page is being replaced (a form's answer loading).

    The body found may be swapped out before its text is read: chromedriver says so as a stale
    element, or — when the swap lands between its own two steps — as an inspector error that the
    node "does not belong to the document"; both mean "not loaded yet", anything else is raised."""
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except (StaleElementReferenceException, NoSuchElementException):
        return ""
    except WebDriverException as error:
        if "does not belong to the document" in str(error.msg):
            return ""
        raise


def button(driver: webdriver.Chrome, label: str) -> WebElement:
    """The (first) button whose text or accessible label is ``label``."""
    for element in driver.find_elements(By.TAG_NAME, "button"):
        if element.text.strip() == label or element.get_attribute("aria-label") == label:
            return element
    raise AssertionError(f"no button {label!r} on {driver.current_url}")


def fresh_directory(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
