"""The container image's files, checked offline: hadolint, the base pinned by digest, the OCI
labels and who fills them, the build context (.dockerignore) and the compose file. `make image`
builds the image and checks the labels it got."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
BUILD_SCRIPT = DEPLOY / "build-image.sh"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            keyword, _, arguments = pending.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
        pending = ""
    return result


def stages() -> list[list[tuple[str, str]]]:
    """The instructions before the first FROM (global ARGs), then each stage's from its FROM."""
    result: list[list[tuple[str, str]]] = [[]]
    for instruction in instructions(DOCKERFILE):
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def build_args(stage: list[tuple[str, str]]) -> dict[str, str]:
    pairs = [shlex.split(arguments)[0].partition("=") for kind, arguments in stage if kind == "ARG"]
    return {name: default for name, _, default in pairs}


def copied_sources() -> list[str]:
    """What the Dockerfile COPYs from the build context (not from another stage)."""
    sources = []
    for kind, arguments in instructions(DOCKERFILE):
        words = shlex.split(arguments)
        if kind in {"COPY", "ADD"} and not any(w.startswith("--from") for w in words):
            sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_pinned_by_digest() -> None:
    """Every stage starts from BASE_IMAGE (or an earlier stage), whose default names a digest,
    so a moved tag upstream cannot change what a rebuild starts from."""
    global_args, *built = stages()
    base = build_args(global_args)["BASE_IMAGE"]
    assert base.startswith("python:3.11-slim@")
    assert DIGEST.search(base), base
    names: set[str] = set()
    for stage in built:
        words = shlex.split(stage[0][1])
        assert words[0] in {"${BASE_IMAGE}", *names} or DIGEST.search(words[0]), words[0]
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    # The offline build passes its local base by digest too, never a bare tag.
    script = BUILD_SCRIPT.read_text()
    assert '--build-arg BASE_IMAGE="$base"' in script
    assert re.search(
        r"^base=\S+@\$\(podman image inspect --format '\{\{\.Digest\}\}' ", script, re.M
    )


OCI = "org.opencontainers.image."
FROM_THE_BUILD = {"version": "VERSION", "revision": "REVISION", "created": "CREATED"}


def test_the_image_carries_the_oci_labels_and_the_build_fills_them() -> None:
    final = stages()[-1]
    labels: dict[str, str] = {}
    for kind, arguments in final:
        if kind == "LABEL":
            labels |= dict(word.partition("=")[::2] for word in shlex.split(arguments))
    required = {"title", "description", "source", "version", "revision", "created", "licenses"}
    assert {OCI + name for name in required} <= labels.keys()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels[OCI + "title"] == project["name"]
    assert labels[OCI + "licenses"] == project["license"]
    assert labels[OCI + "description"]
    # What differs per build comes from build arguments of the final stage (an ARG before the
    # first FROM would be empty there), and deploy/build-image.sh passes each one.
    declared = build_args(final)
    script = BUILD_SCRIPT.read_text()
    for label, argument in {**FROM_THE_BUILD, "source": "SOURCE"}.items():
        assert labels[OCI + label] == "${" + argument + "}", label
        assert argument in declared, argument
        assert f"--build-arg {argument}=" in script, argument


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as Docker and podman read it: (excludes, pattern), later rules winning;
    `*` and `?` stay within a path segment, `**` spans any number of them."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((excludes, re.compile(f"^{regex}$")))
    return rules


def excluded(path: str) -> bool:
    """Whether the build context leaves `path` out: the last rule that matches it or one of its
    parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for excludes, regex in ignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            verdict = excludes
    return verdict


@pytest.mark.parametrize(
    "path",
    [
        ".venv/lib/python3.11/site-packages/litestar/app.py",
        ".git/HEAD",
        ".mypy_cache/3.11/service/cli.meta.json",
        ".pytest_cache/v/cache/nodeids",
        ".hypothesis/examples/x",
        "tests/deploy/test_image.py",
        "docs/operations.md",
        "bench/results/2026-12-04.json",
        "handshake.egg-info/PKG-INFO",
        "service/__pycache__/cli.cpython-311.pyc",
        "service/policy/__pycache__/model.cpython-311.pyc",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert excluded(path)


def test_the_build_context_keeps_what_the_dockerfile_copies() -> None:
    sources = copied_sources()
    assert {"deploy/wheels/", "service/", "policies/", "requirements/runtime.lock"} <= set(sources)
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--", *sources],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    files = [f for f in tracked.split("\0") if f]
    for source in sources:
        # Each source has tracked files; a file added under it (a built wheel) is kept too.
        assert any(f == source or f.startswith(source) for f in files), source
        if source.endswith("/"):
            files.append(source + "added.whl")
    assert [f for f in files if excluded(f)] == []


def test_the_compose_file_runs_the_image_locked_down() -> None:
    (compose,) = [d for d in yaml.safe_load_all((DEPLOY / "compose.yaml").read_text()) if d]
    service = compose["services"]["handshake"]
    assert service["build"]["context"] == ".."  # the repository root, where .dockerignore is
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert service["read_only"] is True
    assert "../policies:/policies:ro" in service["volumes"]
