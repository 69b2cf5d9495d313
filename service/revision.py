"""Which revision of the policies is loaded: the git commit when the directory is a work tree.

A work tree with uncommitted changes under the policy directory reports `<commit>-dirty`: the
commit alone would claim content it does not have (the digest tells the content apart).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git", "policy_revision"]


def git(directory: Path, *args: str) -> str | None:
    """`git -C directory args…`'s output, or None when git fails or is missing."""
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.decode("utf-8", "replace") if result.returncode == 0 else None


def policy_revision(directory: Path, configured: str | None = None) -> str | None:
    """The commit of the directory's work tree (`-dirty` if changed), else `configured`."""
    inside = git(directory, "rev-parse", "--is-inside-work-tree")
    commit = git(directory, "rev-parse", "HEAD") if inside and inside.strip() == "true" else None
    if not commit:
        return configured
    changes = git(directory, "status", "--porcelain", "--", ".")
    return commit.strip() + ("-dirty" if changes else "")
