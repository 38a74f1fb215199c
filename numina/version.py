"""The code version recorded in every run: the package version and, in a git checkout, the commit.

Imports nothing from the project but the package version.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from numina import __version__


def code_version() -> str:
    """`0.1.0+g<commit>[.dirty]` inside a git checkout, `0.1.0` otherwise."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
