"""The code version recorded in every run: the package version and, in a git checkout, the commit.

May import only the standard library and the package's own version (numina).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from numina import __version__

_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(_ROOT), *args], capture_output=True, text=True, check=True, timeout=5
    )
    return result.stdout.strip()


def code_version() -> str:
    """`0.1.0+g<commit>[.dirty]` inside a git checkout, `0.1.0` otherwise."""
    try:
        commit = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
