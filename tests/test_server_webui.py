"""The web page at `/` driven in headless Chromium: a diffusion answer shows
the block being denoised step by step, then its text and statistics; an AR
answer shows text and no block. Screenshots land in $NLD_TEST_ARTIFACTS (or
pytest's tmp_path) for a person to look at."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from nld_cpp.testing.server import running_server

pytestmark = pytest.mark.server

WAIT_S = 60
PROMPT = "Repeat: The dog sleeps on the warm mat."
CONTROL_IDS = ["prompt", "send", "stop", "mode", "block-length", "threshold", "max-tokens", "temperature",
               "api-key", "messages", "canvas"]
# Chromium's network emulation, in bytes per second: slow enough that the
# stream of one answer takes a few seconds, so the screenshot taken mid-denoise
# really is mid-denoise (the tiny model itself finishes in milliseconds).
SLOW_THROUGHPUT = 3000

# Records every distinct state of #canvas while a request is in flight, with
# the number of masked cells; runs in the page after each DOM change of it.
RECORD_CANVAS_JS = """
window.__canvasStates = [];
const canvas = document.getElementById("canvas");
const record = () => {
  const state = {step: canvas.dataset.step, text: canvas.innerText, hidden: canvas.hidden,
                 masked: canvas.querySelectorAll(".cell.masked").length,
                 cells: canvas.querySelectorAll(".cell").length, busy: document.body.dataset.busy};
  const last = window.__canvasStates[window.__canvasStates.length - 1];
  if (!last || last.text !== state.text || last.step !== state.step || last.hidden !== state.hidden)
    window.__canvasStates.push(state);
};
new MutationObserver(record).observe(canvas, {subtree: true, childList: true, characterData: true,
                                              attributes: true});
"""

# Keeps the body of each request the page sends, to check what it asked for.
RECORD_REQUESTS_JS = """
window.__requests = [];
const realFetch = window.fetch;
window.fetch = (url, opts) => {
  window.__requests.push({url: String(url), body: opts && opts.body ? String(opts.body) : null});
  return realFetch(url, opts);
};
"""


def _artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("NLD_TEST_ARTIFACTS")
    out = Path(env) if env else tmp_path_factory.mktemp("webui-screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_server([], log_dir=tmp_path_factory.mktemp("webui-server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    chromedriver = shutil.which("chromedriver")
    if browser is None or chromedriver is None:
        missing = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):  # .ci/run installs them: a skip there would hide the page going untested
            pytest.fail(missing)
        pytest.skip(missing)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    # An explicit driver path keeps selenium-manager from downloading one.
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    drv.set_page_load_timeout(WAIT_S)
    drv.set_script_timeout(WAIT_S)
    try:
        yield drv
    finally:
        drv.quit()


def _wait(drv: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, WAIT_S, poll_frequency=0.02).until(condition, message=f"timed out waiting for {what}")


def _set(drv: Any, element_id: str, value: str) -> None:
    el = drv.find_element("id", element_id)
    el.clear()
    el.send_keys(value)


def _ask(drv: Any, mode: str, prompt: str, max_tokens: int) -> None:
    from selenium.webdriver.support.ui import Select

    Select(drv.find_element("id", "mode")).select_by_value(mode)
    _set(drv, "temperature", "0")
    _set(drv, "max-tokens", str(max_tokens))
    drv.execute_script(RECORD_CANVAS_JS)
    _set(drv, "prompt", prompt)
    drv.find_element("id", "send").click()


def _last_answer(drv: Any) -> Any:
    return drv.find_elements("css selector", "#messages .message.assistant")[-1]


def _set_throughput(drv: Any, bytes_per_s: int) -> None:
    drv.execute_cdp_cmd("Network.enable", {})
    drv.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": bytes_per_s, "uploadThroughput": -1})


def test_page_streams_diffusion_canvas_then_ar(driver: Any, server: Any,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    shots = _artifact_dir(tmp_path_factory)
    driver.get(server.url + "/")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.props") != "pending", "/props")
    assert driver.execute_script("return document.body.dataset.props") == "loaded"
    assert "nld" in driver.title.lower()
    for element_id in CONTROL_IDS:
        assert driver.find_elements("id", element_id), f"#{element_id} is missing"
    assert driver.execute_script("return document.body.dataset.busy") == "0"
    modes = [o.get_attribute("value") for o in driver.find_elements("css selector", "#mode option")]
    assert {"ar", "diffusion"} <= set(modes)
    driver.execute_script(RECORD_REQUESTS_JS)

    # Diffusion over a slowed network: the block view must change step by step.
    _set_throughput(driver, SLOW_THROUGHPUT)
    _ask(driver, "diffusion", PROMPT, 48)
    _wait(driver, lambda d: d.execute_script(
        "const c = document.getElementById('canvas');"
        "return !c.hidden && Number(c.dataset.step) >= 2 && c.querySelectorAll('.cell.masked').length > 0"),
        "a canvas with masked cells at step 2 or later")
    driver.save_screenshot(str(shots / "webui-diffusion-mid-denoise.png"))
    _set_throughput(driver, -1)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.busy") == "0", "the diffusion answer")
    driver.save_screenshot(str(shots / "webui-diffusion-done.png"))

    states: List[Dict[str, Any]] = driver.execute_script("return window.__canvasStates")
    streaming = [s for s in states if s["busy"] == "1" and not s["hidden"] and s["cells"] > 0]
    assert len(streaming) >= 3, f"the canvas changed fewer than twice while streaming: {states}"
    assert any(s["masked"] > 0 for s in streaming), f"no masked cell was ever shown: {states}"
    assert len({s["step"] for s in streaming}) >= 2, states
    assert not driver.find_element("id", "canvas").is_displayed(), "the canvas stays shown after the answer"
    answer = _last_answer(driver)
    assert answer.find_element("css selector", ".text").text.strip(), "empty diffusion answer"
    assert not answer.find_elements("css selector", ".error")
    stats = answer.find_element("css selector", ".stats").text
    assert "diffusion" in stats and "tokens per forward" in stats and "tok/s" in stats, stats

    requests = driver.execute_script("return window.__requests")
    assert [r["url"] for r in requests] == ["v1/chat/completions"], requests
    body = json.loads(requests[0]["body"])
    assert body["mode"] == "diffusion" and body["stream"] is True and body["canvas"] is True
    assert body["max_tokens"] == 48 and body["temperature"] == 0
    assert body["stream_options"] == {"include_usage": True}
    assert "block_length" not in body and "threshold" not in body
    assert body["messages"] == [{"role": "user", "content": PROMPT}]

    # AR continues the same conversation: text, statistics, never a canvas.
    _ask(driver, "ar", PROMPT, 32)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.busy") == "0", "the AR answer")
    driver.save_screenshot(str(shots / "webui-ar-done.png"))
    states = driver.execute_script("return window.__canvasStates")
    assert not any(not s["hidden"] for s in states), f"a canvas was shown in AR mode: {states}"
    answer = _last_answer(driver)
    assert answer.find_element("css selector", ".text").text.strip(), "empty AR answer"
    assert "tok/s" in answer.find_element("css selector", ".stats").text
    body = json.loads(driver.execute_script("return window.__requests")[-1]["body"])
    assert body["mode"] == "ar" and "canvas" not in body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]

    # Auto with the draft length chosen per round: the request says so, the
    # statistics say what was chosen.
    _set(driver, "block-length", "auto")
    _ask(driver, "auto", PROMPT, 32)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.busy") == "0", "the auto answer")
    answer = _last_answer(driver)
    assert answer.find_element("css selector", ".text").text.strip(), "empty auto answer"
    stats = answer.find_element("css selector", ".stats").text
    assert "auto" in stats and "AR steps +" in stats and "rounds" in stats, stats
    body = json.loads(driver.execute_script("return window.__requests")[-1]["body"])
    assert body["mode"] == "auto" and body["block_length"] == "auto"
    _set(driver, "block-length", "")

    # A request the server refuses (400): its message shows, the page stays usable.
    _set(driver, "threshold", "5")
    _ask(driver, "diffusion", "hi", 16)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.busy") == "0", "the refused request")
    answer = _last_answer(driver)
    assert "threshold" in answer.find_element("css selector", ".error").text
    assert not answer.find_elements("css selector", ".stats")
    assert driver.find_element("id", "send").is_enabled()
