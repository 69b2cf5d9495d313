"""Cerbos as the peer Handshake is compared with: a pinned binary installed from npm, serving
its copy of the `default` policy (bench/cerbos/policies), and Handshake's requests translated
into its checks. Named apart from bench/cerbos/, which holds its configuration."""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.servers import ROOT, free_port, stop, wait_ready

BENCH = ROOT / "bench"
CERBOS_VERSION = "0.55.0"  # pinned: figures from different Cerbos versions do not compare
CERBOS_PACKAGE = f"@cerbos/cerbos-linux-x64@{CERBOS_VERSION}"
CERBOS_CACHE = BENCH / ".cache" / f"cerbos-{CERBOS_VERSION}"
CERBOS_BINARY = CERBOS_CACHE / "node_modules/@cerbos/cerbos-linux-x64/cerbos-linux-x64"
ACTIONS = ["accept", "ignore", "decline", "defer"]  # Cerbos: one action per decision


def install_cerbos() -> Path:
    """The pinned Cerbos binary, installed from npm into bench/.cache on first use."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit("Cerbos from npm is wired for linux-x64 only; use --no-cerbos")
    if CERBOS_BINARY.exists():
        return CERBOS_BINARY
    if not shutil.which("npm"):
        raise SystemExit("needs npm to fetch Cerbos: apt-get install npm (or --no-cerbos)")
    print(f"installing {CERBOS_PACKAGE} into {CERBOS_CACHE.relative_to(ROOT)}", flush=True)
    CERBOS_CACHE.mkdir(parents=True, exist_ok=True)
    command = ["npm", "install", "--prefix", str(CERBOS_CACHE), "--no-save", "--no-audit"]
    command += ["--no-fund", "--no-package-lock", CERBOS_PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode or not CERBOS_BINARY.exists():
        raise SystemExit(f"npm install {CERBOS_PACKAGE} failed:\n{done.stdout}{done.stderr}")
    return CERBOS_BINARY


def cerbos_version(binary: Path) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def cerbos_compile(binary: Path) -> None:
    """Compile the policy and run its test suite (the cases of policies/default_test.yaml)."""
    policies = BENCH / "cerbos" / "policies"
    done = subprocess.run(
        [binary, "compile", str(policies)], capture_output=True, text=True, timeout=120
    )
    if done.returncode:
        raise SystemExit(f"FAILED: cerbos compile {policies}:\n{done.stdout}{done.stderr}")


@contextmanager
def cerbos(binary: Path, tmp: Path) -> Iterator[tuple[str, int]]:
    """Cerbos on free loopback ports, reading bench/cerbos/policies; yields URL and pid."""
    http, grpc = free_port(), free_port()
    command = [
        str(binary), "server", f"--config={BENCH / 'cerbos' / 'config.yaml'}",
        f"--set=server.httpListenAddr=127.0.0.1:{http}",
        f"--set=server.grpcListenAddr=127.0.0.1:{grpc}",
        f"--set=storage.disk.directory={BENCH / 'cerbos' / 'policies'}",
        "--log-level=warn",
    ]  # fmt: skip
    log = tmp / "cerbos.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=BENCH / "cerbos", stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{http}"
        wait_ready(process, f"{url}/_cerbos/health", log, "cerbos")
        yield url, process.pid
    finally:
        stop(process)


def cerbos_body(name: str, request: dict[str, Any]) -> dict[str, Any]:
    """One check: the recipient as the principal, the request as the resource, the four
    decisions as actions. Fields Handshake would default are spelt out (see the policy)."""
    relationship = {
        "met_in_person": False,
        "worked_together": False,
        "shared_employers": [],
        "mutual_connections": 0,
        "connected_elsewhere": [],
        **request.get("relationship", {}),
    }
    recipient = request["recipient"]
    return {
        "requestId": name,
        "principal": {"id": recipient.get("id", "recipient"), "roles": ["user"], "attr": recipient},
        "resources": [
            {
                "actions": ACTIONS,
                "resource": {
                    "kind": "connection_request",
                    "id": request.get("id", name),
                    "attr": {
                        "requester": request["requester"],
                        "message": request.get("message", ""),
                        "relationship": relationship,
                    },
                },
            }
        ],
    }


def cerbos_decisions(url: str, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(decision, rule) for each example: the one allowed action and its output."""
    decisions = {}
    for name, request in examples.items():
        answer = httpx.post(f"{url}/api/check/resources", json=cerbos_body(name, request))
        answer.raise_for_status()
        result = answer.json()["results"][0]
        allowed = [a for a, effect in result["actions"].items() if effect == "EFFECT_ALLOW"]
        rules = [o["val"] for o in result.get("outputs", []) if o["action"] in allowed]
        if len(allowed) != 1 or len(rules) != 1:
            raise SystemExit(f"FAILED: cerbos allowed {allowed} for {name}: {result}")
        decisions[name] = (allowed[0], rules[0])
    return decisions
