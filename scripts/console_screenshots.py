"""Regenerate the console's screenshots under docs/console/ (`make console-screenshots`).

Runs tests/console/test_screenshots.py: the console test package's stack (a
real server, manager, worker and Envoy on a private database and Redis db),
sample tasks, and Debian's Chromium saving a PNG of each page.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    os.environ["DTQ_CONSOLE_SCREENSHOTS"] = str(ROOT / "docs" / "console")
    os.chdir(ROOT)
    return int(pytest.main(["-q", "tests/console/test_screenshots.py", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
