"""Scale: an organisation's repository of many policies, and policies of many rules.

    python bench/scale.py --policies 100,1000      # make bench-scale

For each size, generates that many team policies (copies of the bundled ones, each with
params of its own; one in eight `extends` a team base) into a temporary directory, then:
- `handshake serve` on them (one worker, watching), as a client and an operator see it:
  seconds until ready and its RSS; /metrics once every policy was used; one file edited
  while requests run one after another (the slowest, and the seconds until the new set
  answers); RSS after RELOADS such edits;
- `handshake check` on them (every core);
- in process: the first load (as `serve` compiles: one engine), the memory it adds, and a
  reload after one base file is edited (taking over what did not change) against a reload
  from scratch.
Then one policy of 10, 100 and 1,000 rules decided by its last rule, and an attribute-heavy
request (a 30,000-number list) against a small one on `default`. Results are printed and
written to bench/results/scale-<time>.md with the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.servers import free_port, rss_mib, stop, wait_ready  # noqa: E402
from service.policy import ConnectionRequest, PolicySet, evaluate, load_policies  # noqa: E402
from service.policy.loader import SETTLE_NS  # noqa: E402
from service.policy.request import decode_request  # noqa: E402

POLICIES = ROOT / "policies"
RESULTS = ROOT / "bench" / "results"
NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default="100,1000", help="sizes, comma-separated")
    parser.add_argument("--engine", default="cel-expr-python")
    return parser.parse_args()


def bases() -> list[str]:
    """The bundled policies that extend nothing, as text."""
    texts = []
    for path in sorted(POLICIES.rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if "kind: ConnectionPolicy" in text and "\nextends:" not in text:
            texts.append(text)
    return texts


def generate(directory: Path, count: int) -> Path:
    """`count` team policies under directory/teams; returns the path of one that another
    extends."""
    templates = bases()
    teams = directory / "teams"
    teams.mkdir(parents=True)
    for index in range(count):
        name = f"t{index:05d}"
        if index % 8 == 7:  # one in eight extends the base before it
            base = f"teams/t{index - 1:05d}"
            text = (
                "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"
                f"extends: {base}\ndescription: team {index}, on its base\nrules_after:\n"
                f"  - {{id: extra-{index}, when: 'request.message.contains(\"x{index}\")',"
                " decision: accept, rationale: r}\n"
            )
        else:
            text = f"# team {index}\n" + own_params(templates[index % len(templates)], index)
        (teams / f"{name}.yaml").write_text(text, encoding="utf-8")
    return teams / "t00006.yaml"  # the base of t00007


_LIST = re.compile(r"^(  \w+: \[)(.*?)\]", re.M)
_NUMBER = re.compile(r"^(  \w+: )(\d+)\b", re.M)


def own_params(template: str, index: int) -> str:
    """A team's copy of a template with params of its own (as teams adapt what they copy:
    another industry in each list, other numbers), so what reads params is worked out again
    for each team; the rest of the text is the template's."""
    head, found, rest = template.partition("\nparams:\n")
    if not found:
        return template
    end = re.search(r"^\S", rest, re.M)  # the next top-level key
    block, tail = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
    block = _LIST.sub(lambda m: f"{m[1]}{m[2]}, team{index}]", block)
    block = _NUMBER.sub(lambda m: f"{m[1]}{int(m[2]) + index % 97}", block)
    return f"{head}{found}{block}{tail}"


def seconds(work: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def per_call_us(work: Callable[[], object], number: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(number):
            work()
        best = min(best, (time.perf_counter() - started) / number)
    return best * 1e6


@dataclass
class Served:
    ready: float  # seconds from start until /health/ready
    rss: float  # MiB, then
    metrics_ms: float  # median render of /metrics once every policy was used
    slowest_ms: float  # the slowest of a sequential run of requests during a reload
    live: float  # seconds from an edit until the new set answered
    rss_reloaded: float  # MiB after RELOADS edits, each live


RELOADS = 5


def served(directory: Path, engine: str, edit: Path) -> Served:
    """`handshake serve` (one worker, watching) on `directory`, measured as a client and an
    operator see it."""
    port = free_port()
    log = directory.with_name(f"{directory.name}-serve.log")  # outside the watched directory
    env = {**os.environ, "HANDSHAKE_AUTHENTICATION": "none", "HANDSHAKE_WATCH": "true"}
    env |= {"HANDSHAKE_LOG_LEVEL": "warning", "HANDSHAKE_CEL_ENGINE": engine}
    command = [sys.executable, "-m", "service", "serve", "--policies", str(directory)]
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, f"{url}/health/ready", log, "handshake")
        ready = time.perf_counter() - started
        rss = rss_mib(process.pid)
        with httpx.Client(base_url=url, timeout=60) as client:
            metrics_ms = _metrics_render(client, directory)
            slowest, live = _reload_under_probe(client, edit)
            for _ in range(RELOADS - 1):
                _reload_under_probe(client, edit, probe=False)
        return Served(ready, rss, metrics_ms, slowest, live, rss_mib(process.pid))
    finally:
        stop(process)
        log.unlink(missing_ok=True)


def _body(policy: str) -> bytes:
    request = json.loads((ROOT / "examples" / "requests" / "stranger.json").read_text())
    return json.dumps({"policy": policy, "request": request}).encode()


def _post(client: httpx.Client, body: bytes) -> None:
    answer = client.post("/evaluate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text


def _metrics_render(client: httpx.Client, directory: Path) -> float:
    """Every policy used once (each with its own series, up to the configured number), then
    the median of 5 renders of /metrics, in ms."""
    for path in sorted(directory.rglob("*.yaml")):
        _post(client, _body(path.relative_to(directory).with_suffix("").as_posix()))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        assert client.get("/metrics").status_code == 200
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _reload_under_probe(
    client: httpx.Client, edit: Path, *, probe: bool = True
) -> tuple[float, float]:
    """Requests one after another while `edit` changes (with `probe`; else polls): the
    slowest (ms), and the seconds from the change until the server reports a new digest (at
    most 60 s, 100,000 requests)."""
    body = _body("teams/t00000")
    digest = client.get("/health/ready").json()["digest"]
    for _ in range(200 if probe else 0):  # warm
        _post(client, body)
    edit.write_text(edit.read_text(encoding="utf-8") + "# edited under load\n")
    changed = time.perf_counter()
    slowest, live = 0.0, float("nan")
    for count in range(100_000):
        started = time.perf_counter()
        if probe:
            _post(client, body)
        else:
            time.sleep(0.01)
        slowest = max(slowest, time.perf_counter() - started)
        polled = count % (50 if probe else 1) == 0
        if polled and client.get("/health/ready").json()["digest"] != digest:
            live = time.perf_counter() - changed
            break
        if time.perf_counter() - changed > 60:
            break
    return slowest * 1000, live


def checked(directory: Path) -> float:
    """Seconds `handshake check` takes on `directory` (every core)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "service", "check", str(directory)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def repository(count: int, engine: str) -> list[str]:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        base = generate(directory, count)
        time.sleep(SETTLE_NS / 1e9)  # as files a sync wrote a while ago (service/policy/loader.py)
        serve = served(directory, engine, base)
        check = checked(directory)
        gc.collect()
        before = rss_mib(os.getpid())
        load, first = seconds(
            lambda: load_policies(directory, engine=engine, compare_engines=False)
        )
        assert isinstance(first, PolicySet)
        after = rss_mib(os.getpid())
        base.write_text(base.read_text(encoding="utf-8") + "# edited\n")
        reload, again = seconds(
            lambda: load_policies(directory, engine=engine, compare_engines=False, previous=first)
        )
        assert isinstance(again, PolicySet)
        kept = sum(again.policies[n] is first.policies.get(n) for n in again.policies)
        scratch, _ = seconds(lambda: load_policies(directory, engine=engine, compare_engines=False))
        shutil.rmtree(directory / "teams")
    return [
        f"| {count:,} | {serve.ready:.1f} s | {serve.rss:,.0f} MiB | {serve.rss_reloaded:,.0f} "
        f"MiB | {serve.live:.2f} s, slowest request {serve.slowest_ms:,.0f} ms "
        f"| {serve.metrics_ms:,.0f} ms | {check:.1f} s | {load:.2f} s "
        f"| {after - before:,.0f} MiB | {reload:.2f} s ({len(again.policies) - kept} recompiled) "
        f"| {scratch:.2f} s |"
    ]


def rules(engine: str) -> list[str]:
    """One policy of 10, 100 and 1,000 rules, each decided by its last rule; timed in
    alternation (the best of 7 rounds each), so that the ratio is of one moment."""
    request = decode_request(
        b'{"requester": {"name": "A", "has_photo": true}, "recipient": {"name": "B",'
        b' "has_photo": true}, "relationship": {"mutual_connections": 0}}'
    )
    counts = (10, 100, 1000)
    calls = {}
    with tempfile.TemporaryDirectory() as name:
        for count in counts:
            directory = Path(name) / str(count)
            directory.mkdir()
            body = "".join(
                f"  - {{id: r{i}, when: 'request.relationship.mutual_connections == "
                f"{count - 1 - i}', decision: accept, rationale: 'rule {i}'}}\n"
                for i in range(count)
            )
            (directory / "p.yaml").write_text(
                "apiVersion: handshake/v1\nkind: ConnectionPolicy\nrules:\n"
                f"{body}default: {{decision: ignore, rationale: none}}\n"
            )
            policy_set = load_policies(directory, engine=engine, compare_engines=False)
            assert evaluate(policy_set, "p", request, now=NOW).rule == f"r{count - 1}"
            calls[count] = partial(evaluate, policy_set, "p", request, now=NOW)
    times = dict.fromkeys(counts, float("inf"))
    for _ in range(7):
        for count in counts:
            times[count] = min(times[count], per_call_us(calls[count], 100, rounds=1))
    lines = [f"| {n:,} rules, decided by the last | {times[n]:,.0f} µs |" for n in counts]
    lines.append(f"| 100 rules / 10 rules | {times[100] / times[10]:.1f}x (target ≤ 3x) |")
    return lines


def attributes(engine: str) -> list[str]:
    policy_set = load_policies(POLICIES, engine=engine, compare_engines=False)
    small = decode_request((ROOT / "examples" / "requests" / "stranger.json").read_bytes())
    heavy = ConnectionRequest(
        requester=small.requester,
        recipient=small.recipient,
        attributes={"xs": list(range(30_000))},
    )
    a = per_call_us(lambda: evaluate(policy_set, "default", small, now=NOW), 300)
    b = per_call_us(lambda: evaluate(policy_set, "default", heavy, now=NOW), 30)
    return [
        f"| `default`, small request | {a:,.0f} µs |",
        f"| `default`, 30,000-number attribute list | {b:,.0f} µs ({b / a:.0f}x; target ≤ 25x) |",
    ]


def main() -> int:
    args = parse_args()
    sizes = [int(size) for size in args.policies.split(",")]
    out = [
        f"# Scale ({args.engine}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {platform.machine()}, {_cpu()}, Python {platform.python_version()}",
        "",
        f"| policies | serve: ready | serve: RSS | RSS after {RELOADS} reloads "
        "| one file edited, live | `/metrics` | `check` | in process: first load "
        "| RSS added | one base edited: reload | reload from scratch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_decision = rules(args.engine) + attributes(args.engine)  # first: a quiet process
    for size in sizes:
        out += repository(size, args.engine)
    out += ["", "| rules and attributes | per decision |", "|---|---:|"]
    out += per_decision
    text = "\n".join(out) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scale-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md").write_text(text)
    return 0


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
