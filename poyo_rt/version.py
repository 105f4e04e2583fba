"""The code version recorded with every run and checkpoint."""

from __future__ import annotations

import subprocess
from pathlib import Path

from poyo_rt import __version__


def code_version() -> str:
    """poyo-rt version plus the git commit (``+dirty`` with local changes) when run from a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=2,
                             cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=2, cwd=here).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__
