"""HTTP benchmark in one run: Handshake's bare ceiling, /evaluate per CEL engine, a batch of
100, and Cerbos as a peer, all driven by wrk with the same settings.

    python bench/throughput.py [--seconds 10] [--rounds 3] [--connections 64] [--workers 2]
                               [--engines cel-expr-python,cel-python] [--memory-seconds 0]
                               [--no-cerbos]

Every server is started up front on a free loopback port and runs until the last round. Each
round drives every target once, in the order of the table, for a fixed time with
`wrk -t1 -c<connections> -d<seconds>s --latency` (Debian package `wrk`), so the targets are
interleaved in time and a noisy neighbour weighs on all of them alike:

  bare       GET  /health/live on Handshake: the same stack doing no work (the ceiling)
  bare POST  POST of the same body to bench/bare.py: litestar + msgspec decoding it into the
             same type and answering a small object, no policy work (the issue's "litestar +
             msgspec, bare endpoint": the framework's ceiling for this endpoint's shape)
  evaluate   POST /evaluate, `old-colleague` sample, `default` policy; one server per engine
             (HANDSHAKE_CEL_ENGINE=<engine>; the engine `default` leaves the variable unset)
  batch      POST /evaluate/batch of 100 samples, first engine (decisions/s = requests/s x 100)
  cerbos     POST /api/check/resources on Cerbos (pinned, installed from npm into bench/.cache),
             with bench/cerbos/policies: the same policy, one decision per check
  memory     with --memory-seconds N, after the rounds: its own server with one worker, N s of
             /evaluate, resident memory before/after

Before any load, every server must give the expected decision for the samples in
examples/requests/ (and Cerbos must pass its copy of the policy's test suite); the run stops
otherwise. A server that does not start (e.g. an engine the service does not know) is
reported in the table and the run goes on. It prints a table (requests/s, decisions/s,
p50, p99: medians over the rounds; errors summed; resident memory after the last round; share
of bare, ratio to Cerbos), the requests/s of each round with how the CPU time was split among
the workers (uvicorn's workers share one listening socket, and a burst of connections can
land mostly on one of them: such a round is set aside and run again), whether the targets are
met, and
writes them, with the machine's description and the command, to bench/results/http-<UTC>.md.
Load generator and servers share the machine: compare figures within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.bare import PATH as BARE_PATH  # noqa: E402
from tests.api.server import free_port  # noqa: E402

BENCH = ROOT / "bench"
CERBOS_VERSION = "0.55.0"  # pinned: figures from different Cerbos versions do not compare
CERBOS_PACKAGE = f"@cerbos/cerbos-linux-x64@{CERBOS_VERSION}"
CERBOS_CACHE = BENCH / ".cache" / f"cerbos-{CERBOS_VERSION}"
CERBOS_BINARY = CERBOS_CACHE / "node_modules/@cerbos/cerbos-linux-x64/cerbos-linux-x64"
EXAMPLES = ROOT / "examples" / "requests"
SAMPLE = "old-colleague"
EXPECTED = ("defer", "reconnect-first")  # the sample's (decision, rule) under `default`
ACTIONS = ["accept", "ignore", "decline", "defer"]  # Cerbos: one action per decision
BATCH_ITEMS = 100
BARE_POST_ROW = "bare POST, litestar + msgspec (bench/bare.py)"
MEMORY_TARGET_MIB = 150
START_TIMEOUT = 60  # seconds for a server to become ready
LOPSIDED = 0.8  # a worker's share of the CPU time above which a round is run again
RETRIES = 2

T = TypeVar("T")

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
"""


class StartError(Exception):
    """A server did not come up; the message says why (with the end of its log)."""


@dataclass
class Row:
    """One line of the table: a target and what wrk and /proc said about it."""

    target: str
    decisions_per_request: int = 1
    rounds: list[dict[str, float]] = field(default_factory=list)  # wrk's figures, one a round
    cpu_split: list[list[float]] = field(default_factory=list)  # each worker's share, a round
    # Lopsided rounds run again (see `measure_rounds`): their figures and CPU split.
    set_aside: list[tuple[dict[str, float], list[float]]] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)  # MiB, one per serving process
    note: str = ""  # e.g. why a server did not start
    ok: bool = True

    def _median(self, key: str) -> float:
        return median(r[key] for r in self.rounds) if self.rounds else 0.0

    @property
    def rps(self) -> float:
        return self._median("rps")

    @property
    def p50(self) -> float:
        return self._median("p50")

    @property
    def p99(self) -> float:
        return self._median("p99")

    @property
    def errors(self) -> int:
        every = [*self.rounds, *(r for r, _ in self.set_aside)]  # none hidden
        return int(sum(r["errors"] for r in every))

    @property
    def decisions(self) -> float:
        return self.rps * self.decisions_per_request


@dataclass
class Target:
    """A row measured once a round: where wrk sends what, and whose memory to read after."""

    row: Row
    body: str | None = None
    url: str = ""  # set once its server is up and verified
    pids: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Command line and tools


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per target and round (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds, medians reported (default 3)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="Handshake workers (default 2)")
    parser.add_argument(
        "--engines",
        default="cel-expr-python,cel-python",
        help="comma-separated HANDSHAKE_CEL_ENGINE values, one server each; the first is "
        "used for bare-to-evaluate targets, batch and memory; `default`: leave it unset",
    )
    parser.add_argument(
        "--memory-seconds",
        type=int,
        default=0,
        help="also run N s of /evaluate on one worker and report its memory (default 0: skip)",
    )
    parser.add_argument("--no-cerbos", action="store_true", help="skip the Cerbos peer")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()] or ["default"]
    return args


def wrk_version() -> str:
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install wrk (Debian/Ubuntu package `wrk`)")
    # `wrk -v` prints its version and usage, exits 1.
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].split(" Copyright")[0] if out else "unknown"


def machine(wrk: str, cerbos: str) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    memory = f"{int(meminfo.group(1)) / 1024**2:.1f} GiB" if meminfo else "unknown"
    return [
        f"- CPU: {cpu.group(1) if cpu else platform.machine()}, {os.cpu_count()} cores",
        f"- memory: {memory}",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Python: {platform.python_version()}",
        f"- wrk: {wrk}",
        f"- Cerbos: {cerbos}",
    ]


# ---------------------------------------------------------------------------------------
# Load generation


def wrk(url: str, args: argparse.Namespace, body: str | None, tmp: Path) -> dict[str, float]:
    """Drive `url` for args.seconds; requests/s, p50 and p99 (ms), and errors."""
    command = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency"]
    # wrk's default 2 s timeout would drop slow batch answers from the latencies unseen.
    command += [f"--timeout={max(args.seconds, 2)}s"]
    if body is not None:
        if "]==]" in body:
            raise ValueError("the body would close the Lua long string")
        script = tmp / f"body-{abs(hash(body))}.lua"
        script.write_text(LUA % body, encoding="utf-8")
        command += ["-s", str(script)]
    done = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=args.seconds + 60, check=False
    )
    return parse_wrk(done.stdout + done.stderr)


def parse_wrk(out: str) -> dict[str, float]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    # Without any answer wrk prints no latency distribution.
    latency = {p: re.search(rf"^\s+{p}%\s+(\S+)", out, re.M) for p in ("50", "99")}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    return {
        "rps": float(rps.group(1)),
        "p50": _ms(latency["50"].group(1)) if latency["50"] else float("nan"),
        "p99": _ms(latency["99"].group(1)) if latency["99"] else float("nan"),
        "errors": errors,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def measure(row: Row, url: str, args: argparse.Namespace, body: str | None, tmp: Path) -> Row:
    """One more round of `row`."""
    row.rounds.append(wrk(url, args, body, tmp))
    return row


# ---------------------------------------------------------------------------------------
# Processes and memory


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024  # type: ignore[union-attr]


def workers_of(pid: int, workers: int) -> list[int]:
    """The processes that serve requests: the server itself with one worker, else uvicorn's
    spawned children (not multiprocessing's resource tracker, which serves nothing)."""
    if workers == 1:
        return [pid]
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == pid and b"spawn_main" in cmdline:
            children.append(int(stat.parent.name))
    return sorted(children)


def wait_ready(
    process: subprocess.Popen[bytes], url: str, log: Path, name: str, status: int = 200
) -> None:
    """Until GET `url` answers `status`."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartError(f"{name} exited with {process.returncode}: {_tail(log)}")
        try:
            if httpx.get(url, timeout=1).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise StartError(f"{name} not ready within {START_TIMEOUT} s: {_tail(log)}")


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines()
    return " / ".join(text[-lines:]) or "(no output)"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------
# Handshake


@contextmanager
def handshake(engine: str, workers: int, tmp: Path) -> Iterator[tuple[str, list[int]]]:
    """A fresh `handshake serve`; yields its URL and the pids of its workers."""
    port = free_port()
    # Only the settings chosen here: an inherited HANDSHAKE_* (tokens, a policy dir) would
    # change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env |= {
        "HANDSHAKE_POLICIES": str(ROOT / "policies"),
        "HANDSHAKE_LOG_LEVEL": "warning",  # the request log would measure the log sink
        "HANDSHAKE_PORT": str(port),
        "HANDSHAKE_WORKERS": str(workers),
    }
    if engine != "default":
        env["HANDSHAKE_CEL_ENGINE"] = engine
    command = [sys.executable, "-m", "service", "serve"]
    with serving(command, env, port, workers, tmp, f"handshake ({engine})", "/health/ready") as up:
        yield up


@contextmanager
def bare_post(workers: int, tmp: Path) -> Iterator[tuple[str, list[int]]]:
    """bench/bare.py under uvicorn with `handshake serve`'s options; its URL and workers."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "bench.bare:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--no-access-log", "--no-server-header", "--no-proxy-headers"]
    command += ["--log-level", "warning"]
    # A POST route only: GET answers 405 once it is up.
    with serving(command, dict(os.environ), port, workers, tmp, "bare POST", BARE_PATH, 405) as up:
        yield up


@contextmanager
def serving(
    command: list[str],
    env: dict[str, str],
    port: int,
    workers: int,
    tmp: Path,
    name: str,
    ready_path: str,
    ready_status: int = 200,
) -> Iterator[tuple[str, list[int]]]:
    """Run `command` (a server on `port`) until the block ends; yields its URL and the pids of
    its workers once GET `ready_path` answers `ready_status`."""
    log = tmp / f"{name.split()[0]}-{port}.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, f"{url}{ready_path}", log, name, ready_status)
        yield url, _wait_for_workers(process, workers)
    finally:
        stop(process)


def _wait_for_workers(process: subprocess.Popen[bytes], workers: int) -> list[int]:
    deadline = time.monotonic() + START_TIMEOUT
    while len(pids := workers_of(process.pid, workers)) < workers:
        if time.monotonic() > deadline:
            raise StartError(f"only {len(pids)} of {workers} workers started")
        time.sleep(0.2)
    # Ready means one worker answers; give the others time to finish importing the app.
    time.sleep(1)
    return pids


def evaluate_body(request: dict[str, Any]) -> dict[str, Any]:
    return {"request": request}  # no `policy`: the server's default policy, `default`


def handshake_decisions(url: str, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(decision, rule) for each example request, from POST /evaluate."""
    decisions = {}
    for name, request in examples.items():
        answer = httpx.post(f"{url}/evaluate", json=evaluate_body(request), timeout=30)
        answer.raise_for_status()
        decision = answer.json()
        if decision["errors"]:
            raise SystemExit(f"FAILED: handshake reported errors for {name}: {decision['errors']}")
        decisions[name] = (decision["decision"], decision["rule"])
    return decisions


def check_batch(url: str, body: str) -> None:
    answer = httpx.post(
        f"{url}/evaluate/batch",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    answer.raise_for_status()
    results = answer.json()["results"]
    got = {(r["decision"]["decision"], r["decision"]["rule"]) for r in results if r["decision"]}
    if len(results) != BATCH_ITEMS or got != {EXPECTED}:
        raise SystemExit(f"FAILED: batch of {BATCH_ITEMS} gave {len(results)} results, {got}")


# ---------------------------------------------------------------------------------------
# Cerbos


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


# ---------------------------------------------------------------------------------------
# The run


def verify(target: str, got: dict[str, Any], reference: dict[str, Any]) -> None:
    """The sample must give EXPECTED, and every example what the first verified target gave."""
    if got[SAMPLE] != EXPECTED:
        raise SystemExit(f"FAILED: {target} decided {got[SAMPLE]} for {SAMPLE}, not {EXPECTED}")
    if reference and got != reference:
        raise SystemExit(f"FAILED: {target} decided {got}; expected {reference}")
    reference.update(got)
    print(f"verified {target}: {SAMPLE} -> {EXPECTED[0]} ({EXPECTED[1]})", flush=True)


def start(
    servers: ExitStack, server: AbstractContextManager[T], name: str, rows: list[Row]
) -> T | None:
    """Keep `server` running until `servers` closes; None, `rows` marked, if it does not start."""
    try:
        return servers.enter_context(server)
    except StartError as exc:
        for row in rows:
            row.ok, row.note = False, f"did not start: {exc}"
        print(f"{name} did not start: {exc}", file=sys.stderr, flush=True)
        return None


def start_cerbos(
    servers: ExitStack, tmp: Path, examples: dict[str, Any], ref: dict[str, Any]
) -> Target:
    binary = install_cerbos()
    cerbos_compile(binary)
    body = json.dumps(cerbos_body(SAMPLE, examples[SAMPLE]))
    target = Target(Row("cerbos POST /api/check/resources"), body)
    if server := start(servers, cerbos(binary, tmp), "cerbos", [target.row]):
        url, pid = server
        verify("cerbos", cerbos_decisions(url, examples), ref)
        target.url, target.pids = f"{url}/api/check/resources", [pid]
    return target


def start_handshake(
    servers: ExitStack,
    args: argparse.Namespace,
    tmp: Path,
    examples: dict[str, Any],
    ref: dict[str, Any],
) -> list[Target]:
    """The bare servers, then one per engine; the targets in the order of the table."""
    body = json.dumps(evaluate_body(examples[SAMPLE]))
    batch_body = json.dumps({"items": [evaluate_body(examples[SAMPLE])] * BATCH_ITEMS})
    bare = Target(Row("bare GET /health/live", decisions_per_request=0))
    # Bare does not depend on the engine: its own server, without the engine variable.
    server = start(servers, handshake("default", args.workers, tmp), "handshake", [bare.row])
    if server:
        url, pids = server
        bare.url, bare.pids = f"{url}/health/live", pids
    bare_post_target = Target(Row(BARE_POST_ROW, decisions_per_request=0), body)
    server = start(servers, bare_post(args.workers, tmp), "bare POST", [bare_post_target.row])
    if server:
        url, pids = server
        bare_post_target.url, bare_post_target.pids = f"{url}{BARE_PATH}", pids
    targets = [bare, bare_post_target]
    for index, engine in enumerate(args.engines):
        evaluate = Target(Row(f"POST /evaluate ({engine})"), body)
        batch = Target(
            Row(f"POST /evaluate/batch of {BATCH_ITEMS} ({engine})", BATCH_ITEMS), batch_body
        )
        targets += [evaluate, batch] if index == 0 else [evaluate]
        name = f"handshake ({engine})"
        server = start(
            servers, handshake(engine, args.workers, tmp), name, [evaluate.row, batch.row]
        )
        if not server:
            continue
        url, pids = server
        verify(name, handshake_decisions(url, examples), ref)
        evaluate.url, evaluate.pids = f"{url}/evaluate", pids
        if index == 0:
            check_batch(url, batch_body)
            batch.url, batch.pids = f"{url}/evaluate/batch", pids
    return targets


def measure_rounds(targets: list[Target], args: argparse.Namespace, tmp: Path) -> None:
    """Each round drives every started target once, in order; then reads their memory.

    A round in which one worker used more than `LOPSIDED` of the server's CPU time measured
    where the kernel put wrk's burst of connections (uvicorn's workers share one listening
    socket), not the server: it is set aside and run again, at most `RETRIES` times; the
    last try counts whatever its split. Set-aside rounds are reported with the others.
    """
    started = [target for target in targets if target.row.ok]
    for number in range(1, args.rounds + 1):
        for target in started:
            for attempt in range(RETRIES + 1):
                before = [cpu_seconds(pid) for pid in target.pids]
                measure(target.row, target.url, args, target.body, tmp)
                used = [cpu_seconds(pid) - b for pid, b in zip(target.pids, before, strict=True)]
                split = [u / (sum(used) or 1) for u in used]
                target.row.cpu_split.append(split)
                rps = target.row.rounds[-1]["rps"]
                print(
                    f"round {number}/{args.rounds}: {target.row.target}: {rps:,.0f} requests/s"
                    f" ({_split(split)})",
                    flush=True,
                )
                if len(split) < 2 or max(split) <= LOPSIDED or attempt == RETRIES:
                    break
                target.row.set_aside.append((target.row.rounds.pop(), target.row.cpu_split.pop()))
    for target in started:
        target.row.rss = [rss_mib(pid) for pid in target.pids]


def run_servers(
    args: argparse.Namespace, tmp: Path, examples: dict[str, Any], ref: dict[str, Any]
) -> tuple[list[Row], Row | None]:
    """Start and verify every server, measure the rounds, stop them all: the Handshake rows
    and the Cerbos row (None with --no-cerbos)."""
    with ExitStack() as servers:
        # Cerbos first: a failed install or a policy mismatch stops the run before the long part.
        peer = None if args.no_cerbos else start_cerbos(servers, tmp, examples, ref)
        targets = start_handshake(servers, args, tmp, examples, ref)
        measure_rounds([*targets, *([peer] if peer else [])], args, tmp)
    return [target.row for target in targets], peer.row if peer else None


def run_memory(args: argparse.Namespace, tmp: Path, examples: dict[str, Any]) -> Row:
    """One worker, args.memory_seconds of /evaluate: resident memory before and after."""
    engine = args.engines[0]
    row = Row(f"memory: POST /evaluate ({engine}), 1 worker, {args.memory_seconds} s")
    body = json.dumps(evaluate_body(examples[SAMPLE]))
    load = argparse.Namespace(**{**vars(args), "seconds": args.memory_seconds})
    try:
        with handshake(engine, 1, tmp) as (url, pids):
            before = rss_mib(pids[0])
            measure(row, f"{url}/evaluate", load, body, tmp)
            row.rss = [before, rss_mib(pids[0])]
    except StartError as exc:
        row.ok, row.note = False, f"did not start: {exc}"
    return row


# ---------------------------------------------------------------------------------------
# Report


def table(rows: list[Row], cerbos: Row | None) -> list[str]:
    bare = rows[0]
    lines = [
        "| target | requests/s | decisions/s | p50 ms | p99 ms | RSS MiB | share of bare "
        "| x Cerbos decisions/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if not row.ok:
            lines.append(f"| {row.target} | not measured (below) | | | | | | | |")
            continue
        handshake_row = row is not cerbos and not row.target.startswith("memory")
        share = _ratio(row.rps, bare.rps) if handshake_row and bare.ok else "-"
        versus = _ratio(row.decisions, cerbos.decisions) if cerbos and cerbos.ok else "-"
        rss = " / ".join(f"{mib:.0f}" for mib in row.rss)
        if row.target.startswith("memory"):
            rss = " -> ".join(f"{mib:.0f}" for mib in row.rss)  # before -> after
        lines.append(
            f"| {row.target} | {row.rps:,.0f} | "
            f"{f'{row.decisions:,.0f}' if row.decisions_per_request else '-'} | "
            f"{row.p50:,.2f} | {row.p99:,.2f} | {rss} | {share if row is not bare else '100%'} | "
            f"{versus if row.decisions_per_request else '-'} | {row.errors} |"
        )
    return lines


def per_round(rows: list[Row]) -> list[str]:
    """The requests/s of each round, in order, for the rows measured more than once."""

    def rounds(pairs: Iterable[tuple[dict[str, float], list[float]]]) -> str:
        return " / ".join(
            f"{r['rps']:,.0f}" + (f" ({_split(split)})" if len(split) > 1 else "")
            for r, split in pairs
        )

    lines = [
        f"- {row.target}: {rounds(zip(row.rounds, row.cpu_split, strict=True))}"
        + (f"; set aside and run again: {rounds(row.set_aside)}" if row.set_aside else "")
        for row in rows
        if row.ok and len(row.rounds) > 1
    ]
    note = (
        "in brackets: each worker's share of the CPU time the server used in that round; a "
        f"round with a share above {LOPSIDED:.0%} is set aside and run again, at most "
        f"{RETRIES} times"
    )
    return ["", f"Requests/s in each round ({note}):", "", *lines] if lines else []


def _split(shares: list[float]) -> str:
    return "/".join(f"{share:.0%}".rstrip("%") for share in shares) + "%"


def _ratio(value: float, base: float) -> str:
    if not base:
        return "-"
    share = value / base
    return f"{share:.0%}" if share < 1 else f"{share:.1f}x"


def targets(
    rows: list[Row], cerbos: Row | None, memory: Row | None, args: argparse.Namespace
) -> list[str]:
    """Each target: met, MISSED, or n/a when a row it needs was not measured."""
    bare, bare_post, evaluate, batch = rows[:4]  # evaluate and batch: the first engine
    # (name, the rows it needs, is it met, what was measured)
    checks: list[tuple[str, list[Row], Callable[[], bool], Callable[[], str]]] = [
        (
            f"{evaluate.target} >= 60% of bare requests/s",
            [bare, evaluate],
            lambda: evaluate.rps >= 0.6 * bare.rps,
            lambda: _ratio(evaluate.rps, bare.rps),
        ),
        (
            f"{evaluate.target} >= 60% of the {bare_post.target} requests/s",
            [bare_post, evaluate],
            lambda: evaluate.rps >= 0.6 * bare_post.rps,
            lambda: _ratio(evaluate.rps, bare_post.rps),
        ),
        (
            f"{evaluate.target} p99 <= 2x bare p99",
            [bare, evaluate],
            lambda: evaluate.p99 <= 2 * bare.p99,
            lambda: f"{evaluate.p99:,.2f} ms vs {bare.p99:,.2f} ms",
        ),
        (
            f"batch of {BATCH_ITEMS} >= 5x single-call decisions/s",
            [evaluate, batch],
            lambda: batch.decisions >= 5 * evaluate.decisions,
            lambda: _ratio(batch.decisions, evaluate.decisions),
        ),
    ]
    if cerbos:
        checks.append(
            (
                f"{evaluate.target} >= 2x Cerbos decisions/s",
                [evaluate, cerbos],
                lambda: evaluate.decisions >= 2 * cerbos.decisions,
                lambda: _ratio(evaluate.decisions, cerbos.decisions),
            )
        )
    if memory:
        checks.append(
            (
                f"RSS of one worker <= {MEMORY_TARGET_MIB} MiB after 60 s of /evaluate",
                [memory],
                lambda: memory.rss[-1] <= MEMORY_TARGET_MIB,
                lambda: f"{memory.rss[-1]:.0f} MiB after {args.memory_seconds} s",
            )
        )
    lines = []
    for name, needs, met, detail in checks:
        if all(row.ok for row in needs):
            lines.append(f"- {'met' if met() else 'MISSED'}: {name} ({detail()})")
        else:
            lines.append(f"- n/a: {name} (not measured)")
    return lines


def write_results(lines: list[str]) -> Path:
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    path = results / f"http-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> int:
    args = parse_args()
    wrk_tool = wrk_version()
    command = shlex.join(["python", "bench/throughput.py", *sys.argv[1:]])
    examples = {p.stem: json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))}
    reference: dict[str, Any] = {}
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rows, cerbos = run_servers(args, tmp, examples, reference)
        # After the rounds, with the other servers stopped, as a run of its own.
        memory = run_memory(args, tmp, examples) if args.memory_seconds else None
    all_rows = rows + [r for r in (cerbos, memory) if r]
    settings = (
        f"{args.rounds} interleaved rounds, medians; "
        f"wrk -t1 -c{args.connections} -d{args.seconds}s --latency on the same machine; "
        f"Handshake: {args.workers} workers, request log off; sample `{SAMPLE}` on `default`"
    )
    report = [
        f"# HTTP benchmark, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        *machine(wrk_tool, cerbos_version(CERBOS_BINARY) if cerbos else "not run"),
        f"- settings: {settings}",
        "",
        *table(all_rows, cerbos),
        *per_round(all_rows),
        *[f"\n{row.target}: {row.note}" for row in all_rows if not row.ok],
        "",
        f"Requests/s, p50, p99: medians over the {args.rounds} rounds. "
        "RSS: resident memory (VmRSS) of each Handshake worker / of Cerbos after the last "
        "round; memory row: before -> after. Errors: non-2xx answers and socket errors "
        "(timeouts), summed over the rounds.",
        "",
        "Targets:",
        "",
        *targets(rows, cerbos, memory, args),
    ]
    print("\n".join(report))
    print(f"\nwritten to {write_results(report).relative_to(ROOT)}")
    return 0 if all(row.ok for row in all_rows) else 1  # a missed target is a figure, not a failure


if __name__ == "__main__":
    sys.exit(main())
