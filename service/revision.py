"""Which revision of the policies is loaded: the git commit when the directory is a work tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["policy_revision"]


def policy_revision(directory: Path, configured: str | None = None) -> str | None:
    """`git rev-parse HEAD` of the directory's work tree, else `configured`, else None."""
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--is-inside-work-tree", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return configured
    lines = result.stdout.split()
    if result.returncode == 0 and lines[:1] == ["true"] and len(lines) == 2:
        return lines[1]
    return configured
