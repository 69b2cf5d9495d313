"""HTTP throughput and latency: /evaluate next to the same server's bare ceiling.

    python bench/throughput.py [--seconds 10] [--connections 64] [--workers 2] [--server uvicorn]

Starts the server on a free loopback port with the bundled policies, then drives it with
`wrk` (Debian package `wrk`) for a fixed time per endpoint:
  bare      GET  /health/live: the same stack (litestar, middleware, logging) with no work
  evaluate  POST /evaluate with the `old-colleague` sample against the `default` policy
  batch     POST /evaluate/batch with 100 such items (decisions/s = requests/s x 100)
and prints requests/s, p50 and p99 latency and the share of the bare ceiling. Results are
appended to bench/results/ with the machine's description. Load and server share the box.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.api.server import free_port  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
"""


def start(server: str, workers: int, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HANDSHAKE_POLICIES": str(ROOT / "policies"),
        "HANDSHAKE_LOG_LEVEL": "warning",  # the request log would measure the terminal
        "HANDSHAKE_PORT": str(port),
        "HANDSHAKE_WORKERS": str(workers),
    }
    if server == "uvicorn":
        command = [sys.executable, "-m", "service", "serve"]
    else:
        command = [
            str(Path(sys.executable).with_name("granian")),
            "--interface", "asgi", "--factory", "--workers", str(workers),
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "service.server:app_from_environment",
        ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                time.sleep(1)  # let every worker come up
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{server} did not start; see {log}")


def wrk(url: str, seconds: int, connections: int, script: Path | None) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        command += ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {p: _ms(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1)) for p in ("50", "99")}  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": latency["50"],
        "p99": latency["99"],
        "non2xx": float(errors.group(1)) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server", choices=["uvicorn", "granian"], action="append")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install wrk")

    item = {"request": json.loads((ROOT / "examples/requests/old-colleague.json").read_text())}
    body = json.dumps(item)
    batch_body = json.dumps({"items": [item] * 100})
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}; wrk -t1 -c{args.connections} "
        f"-d{args.seconds}s on the same machine; {args.workers} workers",
        "",
        "| server | endpoint | requests/s | decisions/s | p50 ms | p99 ms | share of bare "
        "| non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "evaluate.lua"
        script.write_text(LUA % body)
        batch_script = Path(tmp) / "batch.lua"
        batch_script.write_text(LUA % batch_body)
        for server in args.server or ["uvicorn"]:
            port = free_port()
            process = start(server, args.workers, port, Path(tmp) / f"{server}.log")
            try:
                url = f"http://127.0.0.1:{port}"
                bare = wrk(f"{url}/health/live", args.seconds, args.connections, None)
                evaluate = wrk(f"{url}/evaluate", args.seconds, args.connections, script)
                batch = wrk(f"{url}/evaluate/batch", args.seconds, 4, batch_script)
            finally:
                process.terminate()
                process.wait(timeout=30)
            rows = (
                ("bare GET /health/live", bare, 0),
                ("POST /evaluate (default)", evaluate, 1),
                ("POST /evaluate/batch of 100 (4 connections)", batch, 100),
            )
            for name, result, decisions in rows:
                share = result["rps"] / bare["rps"]
                per_second = f"{result['rps'] * decisions:,.0f}" if decisions else "-"
                lines.append(
                    f"| {server} | {name} | {result['rps']:,.0f} | {per_second} | "
                    f"{result['p50']:.2f} | {result['p99']:.2f} | {share:.0%} | "
                    f"{result['non2xx']:.0f} |"
                )
    print("\n".join(lines))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    with (results / "http.md").open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
