"""A small driver for Debian's headless Chromium, for tests and benches that open a page.

It speaks the W3C WebDriver protocol to `chromedriver` over plain HTTP (`urllib`): selenium and
websocket clients are not dependencies of this project, and the handful of commands a page test
needs (open, run a script, click, wait, screenshot) are one request each.

    with Browser() as b:
        b.open(Path("out/index.html"))          # a Path becomes a file:// URL
        b.click("#neuron-list li:nth-child(3)")
        b.wait_for("document.querySelector('#panel').textContent.includes('43')")
        n = b.js("return document.querySelectorAll(arguments[0]).length", "li")
        b.screenshot(tmp_path / "page.png")

`Browser()` starts chromedriver on a free loopback port and one headless session
(`--headless=new --no-sandbox --disable-gpu`, a fresh profile, a 1400x1000 window); leaving the
`with` block always deletes the session and stops the driver (killed if it does not exit), also
when the block raised. `browser_available()` says whether chromium and chromedriver are
installed, for `pytest.mark.skipif`; `require_browser()` skips a test without them (and
`require_chromium()`, for the tests that only render, without chromium), or fails it where
`HOOKED_MLP_REQUIRE_BROWSER` is set (as CI sets it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

# the key under which W3C WebDriver returns an element reference
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
WINDOW = (1400, 1000)
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--mute-audio",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}")


class BrowserError(RuntimeError):
    """chromedriver refused a command or did not start; the message names the command."""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """The path of a Chromium executable, or skip (fail under HOOKED_MLP_REQUIRE_BROWSER)."""
    path = _chromium()
    if path:
        return path
    if os.environ.get("HOOKED_MLP_REQUIRE_BROWSER"):
        pytest.fail("HOOKED_MLP_REQUIRE_BROWSER is set but no chromium is installed")
    pytest.skip("no chromium here (CI installs it and sets HOOKED_MLP_REQUIRE_BROWSER=1)")


def require_browser() -> None:
    """Skip unless chromium and chromedriver are installed (fail under
    HOOKED_MLP_REQUIRE_BROWSER, as `require_chromium` does)."""
    require_chromium()
    if _chromedriver() is None:
        if os.environ.get("HOOKED_MLP_REQUIRE_BROWSER"):
            pytest.fail("HOOKED_MLP_REQUIRE_BROWSER is set but no chromedriver is installed")
        pytest.skip("no chromedriver here (apt-get install chromium-driver)")


def _chromedriver() -> str | None:
    return shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").exists()
        else None)


def browser_available() -> bool:
    """Whether headless Chromium and chromedriver are installed (tests skip otherwise)."""
    return _chromium() is not None and _chromedriver() is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One headless Chromium session driven through chromedriver (see the module docstring).

    `timeout`: seconds any single WebDriver request may take (page loads included).
    """

    def __init__(self, timeout: float = 60.0) -> None:
        if not browser_available():
            raise BrowserError("chromium and chromedriver are needed (apt-get install chromium "
                               "chromium-driver)")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self._driver: subprocess.Popen[bytes] | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._base = ""
        self.session: str | None = None

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> Browser:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        port = _free_port()
        self._base = f"http://127.0.0.1:{port}"
        self._driver = subprocess.Popen(
            [str(_chromedriver()), f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20.0
        while True:
            if self._driver.poll() is not None:
                raise BrowserError(f"chromedriver exited at start (code {self._driver.returncode})")
            try:
                if self._request("GET", "/status", timeout=2.0).get("ready"):
                    break
            except (OSError, BrowserError):
                pass
            if time.monotonic() > deadline:
                raise BrowserError("chromedriver did not answer /status within 20 s")
            time.sleep(0.05)
        self._profile = tempfile.TemporaryDirectory(prefix="hooked-mlp-chromium-")
        options = {"binary": _chromium(),
                   "args": [*CHROMIUM_ARGS, f"--user-data-dir={self._profile.name}"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": options,
                                                 "goog:loggingPrefs": {"browser": "ALL"},
                                                 "timeouts": {"script": int(self.timeout * 1000),
                                                              "pageLoad": int(self.timeout
                                                                              * 1000)}}}}
        value = self._request("POST", "/session", caps)
        self.session = value["sessionId"]

    def close(self) -> None:
        """Delete the session and stop chromedriver (killed after 5 s); safe to call twice."""
        if self.session is not None:
            with contextlib.suppress(OSError, BrowserError):
                self._request("DELETE", f"/session/{self.session}", timeout=10.0)
            self.session = None
        if self._driver is not None:
            if self._driver.poll() is None:
                self._driver.terminate()
                try:
                    self._driver.wait(5.0)
                except subprocess.TimeoutExpired:
                    self._driver.kill()
                    self._driver.wait(5.0)
            self._driver = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    # -- protocol ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self._base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read()).get("value", {})
                msg = f"{err.get('error', e.code)}: {err.get('message', '')}".strip()
            except (ValueError, AttributeError):
                msg = str(e)
            raise BrowserError(f"{method} {path}: {msg.splitlines()[0] if msg else e}") from None
        return payload.get("value")

    def _cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self.session is None:
            raise BrowserError("the browser is not started (use `with Browser() as b:`)")
        return self._request(method, f"/session/{self.session}{path}", body)

    # -- commands ---------------------------------------------------------------------------
    def open(self, where: str | Path) -> None:
        """Load a page and wait for it: a `Path` (or an existing file's name) becomes a file://
        URL; anything else is taken as a URL."""
        if isinstance(where, Path) or (isinstance(where, str) and "://" not in where
                                       and Path(where).exists()):
            path = Path(where).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"open: no such page file {path}")
            url = path.as_uri()
        elif isinstance(where, str):
            url = where
        else:
            raise TypeError(f"open takes a Path or a URL string, got {type(where).__name__}")
        self._cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        """Run `script` as a function body in the page (`return ...` gives the value; the
        arguments are `arguments[0]`, ...) and return its JSON value."""
        return self._cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script: str, *args: Any) -> Any:
        """Run `script` with a callback as its last argument (`arguments[arguments.length-1]`);
        return the value passed to it (e.g. after two animation frames)."""
        return self._cmd("POST", "/execute/async", {"script": script, "args": list(args)})

    def find(self, css: str) -> str:
        """The WebDriver id of the first element matching `css` (BrowserError if none)."""
        try:
            value = self._cmd("POST", "/element", {"using": "css selector", "value": css})
        except BrowserError as e:
            if "no such element" in str(e):
                raise BrowserError(f"no element matches {css!r}") from None
            raise
        return str(value[ELEMENT_KEY])

    def click(self, css: str) -> None:
        """Click the first element matching `css`, as a user would (scrolled into view)."""
        self._cmd("POST", f"/element/{self.find(css)}/click", {})

    def wait_for(self, condition: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll the JavaScript expression `condition` until it is truthy and return its value;
        raise TimeoutError naming the condition (and its last error) after `timeout` s."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                value = self.js(f"return ({condition});")
                if value:
                    return value
            except BrowserError as e:
                last_error = f" (last error: {e})"
            if time.monotonic() > deadline:
                raise TimeoutError(f"wait_for: {condition!r} not true after {timeout} s"
                                   f"{last_error}")
            time.sleep(interval)

    def screenshot(self, path: str | Path) -> Path:
        """Save the viewport as a PNG at `path` and return the path."""
        png = base64.b64decode(self._cmd("GET", "/screenshot"))
        path = Path(path)
        path.write_bytes(png)
        return path

    def console_errors(self) -> list[str]:
        """The page's console errors (uncaught exceptions included) since the last call."""
        entries = self._cmd("POST", "/se/log", {"type": "browser"}) or []
        return [str(e.get("message", e)) for e in entries if e.get("level") == "SEVERE"]
