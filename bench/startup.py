"""Goal 5: start-up. `hooked-mlp --help` must answer without importing the heavy libraries.

    .venv/bin/python bench/startup.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, median, timed

EXE = Path(sys.executable).parent / "hooked-mlp"


def run(cmd: list[str]) -> float:
    return timed(lambda: subprocess.run(cmd, check=True, capture_output=True))


def main() -> None:
    print(f"machine: {machine()}")
    cases = {
        "hooked-mlp --help": [str(EXE), "--help"],
        "hooked-mlp train --help": [str(EXE), "train", "--help"],
        "python -c 'import hooked_mlp'": [sys.executable, "-c", "import hooked_mlp"],
        "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"],
        "python -c 'import transformer_lens' (for scale)": [sys.executable, "-c",
                                                           "import transformer_lens"],
    }
    for label, cmd in cases.items():
        run(cmd)
        t = median([run(cmd) for _ in range(7)])
        print(f"{label:48s} {t:6.2f} s (median of 7)")


if __name__ == "__main__":
    main()
