"""The player page in a real browser: Debian's headless Chromium, driven by selenium, opens the
page from a running ``audioguide serve``, plays a session, seeks by chapter and reads the line
being spoken, as a person on a phone would. Its screenshot (390 x 844, a phone's screen) is the
one in the README: ``AUDIOGUIDE_SCREENSHOT=docs/serve.png pytest tests/test_page_browser.py``.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytest.importorskip("starlette", reason="audioguide serve needs: pip install '.[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "no Chromium here: apt-get install chromium chromium-driver (.ci/run does)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

PHONE_WIDTH, PHONE_HEIGHT = 390, 844


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_WIDTH, "height": PHONE_HEIGHT, "deviceScaleFactor": 1, "mobile": True},
    )
    yield driver
    driver.quit()


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_play_seek_by_chapter_and_read_along(browser, served, rendered_short, tmp_path):
    chapters = [
        (t.title, t.start_s - rendered_short.timeline.tracks[0].start_s)
        for t in rendered_short.timeline.tracks
    ]
    browser.get(served.page_url)
    session = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "button.session"), 20, "the session list"
    )[0]
    assert "Short Test Session" in session.text
    assert "0:47" in session.text and "2 parts" in session.text

    def now() -> float:
        return float(browser.execute_script("return document.getElementById('audio').currentTime"))

    def line() -> str:
        return str(browser.find_element(By.ID, "line").text)

    session.click()
    first = wait_for(lambda: now() > 0.2 and now(), 20, "the session to start playing")
    time.sleep(1.0)
    assert now() > float(first) + 0.5  # it plays on, not stuck at the start

    # The first cue is spoken 5 s in; the line under the player shows it.
    spoken = wait_for(line, 15, "the first spoken line")
    assert spoken == "Welcome. Sit comfortably."

    buttons = browser.find_elements(By.CSS_SELECTOR, "#chapters button")
    assert [b.text.split("\n")[0] for b in buttons] == [title for title, _ in chapters]
    title, start_s = chapters[1]
    buttons[1].click()
    wait_for(
        lambda: (
            not browser.execute_script("return document.getElementById('audio').seeking")
            and abs(now() - start_s) < 2
        ),
        10,
        "the seek to the second chapter",
    )
    assert abs(now() - start_s) < 0.5
    assert browser.find_element(By.ID, "now-chapter").text == title

    # 1 s into the chapter the next cue begins, and the line follows it.
    changed = wait_for(lambda: line() != spoken and line(), 10, "the line to change")
    assert changed == "Follow the tone."
    assert "current" in buttons[1].get_attribute("class")

    png = tmp_path / "serve.png"
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.get_screenshot_as_file(str(png))
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    assert (width, height) == (PHONE_WIDTH, PHONE_HEIGHT)
    if os.environ.get("AUDIOGUIDE_SCREENSHOT"):
        shutil.copyfile(png, os.environ["AUDIOGUIDE_SCREENSHOT"])


def test_the_lock_screen_gets_title_and_artwork(browser, served):
    browser.get(served.page_url)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "button.session"), 20, "the list")[
        0
    ].click()
    metadata = wait_for(
        lambda: browser.execute_script(
            "const m = navigator.mediaSession.metadata;"
            "return m && [m.title, m.artist, m.artwork.map(a => a.src)];"
        ),
        10,
        "Media Session metadata",
    )
    title, artist, artwork = metadata  # type: ignore[misc]
    assert (title, artist) == ("Short Test Session", "audioguide")
    assert artwork == [served.page_url + "short/cover.png"]
