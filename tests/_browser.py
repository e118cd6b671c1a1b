"""Headless Chromium for the tests that render pages: found on PATH, or the test is skipped (or
fails, where HOOKED_MLP_REQUIRE_BROWSER says a browser must be there, as CI does)."""

import os
import shutil

import pytest


def require_chromium() -> str:
    """The path of a Chromium executable, or skip (fail under HOOKED_MLP_REQUIRE_BROWSER)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("HOOKED_MLP_REQUIRE_BROWSER"):
        pytest.fail("HOOKED_MLP_REQUIRE_BROWSER is set but no chromium is installed")
    pytest.skip("no chromium here (CI installs it and sets HOOKED_MLP_REQUIRE_BROWSER=1)")
