"""Render report/report.html in headless Chromium and save the README's picture.

    .venv/bin/hooked-mlp report --out report
    .venv/bin/python scripts/screenshot_report.py [report/report.html] [docs/report.png]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    page = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "report" / "report.html").resolve()
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "docs" / "report.png").resolve()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("screenshot_report: no chromium (apt-get install chromium)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1200,1500",
             "--virtual-time-budget=15000", f"--screenshot={out}", page.as_uri()],
            check=True, capture_output=True, timeout=180)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
