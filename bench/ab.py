"""A/B over HTTP: this checkout against another revision, or against itself with settings.

    python bench/ab.py --base f8d18af            # make bench-ab BASE=f8d18af
    python bench/ab.py --with HANDSHAKE_SHADOW_POLICIES=policies   # shadow on vs off

The base revision is checked out into a temporary git worktree (with `--with`, the base is
this checkout without those variables); both serve the bundled policies (2 workers each, logs
at warning) on free ports, and wrk drives `POST /evaluate` on each in turn, the order
alternating every round. Reported per side: the median requests/s and
the median CPU time the server's processes (master and workers) spent per request, which is
steadier than requests/s on a shared machine. Both run the same venv: only `service/` differs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import free_port, wait_ready  # noqa: E402
from bench.wrk import LUA, parse_wrk  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sides = parser.add_mutually_exclusive_group(required=True)
    sides.add_argument("--base", help="the revision to compare against")
    sides.add_argument(
        "--with",
        dest="settings",
        action="append",
        metavar="VAR=VALUE",
        help="compare this checkout with these variables set against it without them",
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds (default 10)")
    parser.add_argument("--seconds", type=int, default=6, help="wrk -d per side and round")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    parser.add_argument("--sample", default="stranger", help="examples/requests/<name>.json")
    return parser.parse_args()


def group_cpu_seconds(group: int) -> float:
    """User + system CPU time of every live process in process group `group`."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def serve(tree: Path, port: int, log: Path, settings: dict[str, str]) -> subprocess.Popen[bytes]:
    """Handshake from `tree` (its `service/` first on the path), in a process group of its own."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "HANDSHAKE_AUTHENTICATION": "none",
        "HANDSHAKE_WATCH": "false",
        "HANDSHAKE_LOG_LEVEL": "warning",
        **settings,
    }
    command = [sys.executable, "-m", "service", "serve", "--policies", str(ROOT / "policies")]
    command += ["--port", str(port), "--workers", "2"]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=tree, env=env, stdout=out, stderr=out, start_new_session=True
        )


def main() -> int:
    args = parse_args()
    request = json.loads((ROOT / "examples" / "requests" / f"{args.sample}.json").read_text())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = tmp / "base"
        if args.base:
            git = ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q"]
            subprocess.run([*git, str(base), args.base], check=True)
        settings = dict(s.split("=", 1) for s in args.settings or ())
        script = tmp / "body.lua"
        script.write_text(LUA % json.dumps({"policy": "default", "request": request}))
        sides = {"base": (base, {}), "head": (ROOT, {})}
        if not args.base:
            sides = {"base": (ROOT, {}), "head": (ROOT, settings)}
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for name, (tree, env) in sides.items():
                port = free_port()
                servers[name] = (serve(tree, port, tmp / f"{name}.log", env), port)
            for name, (process, port) in servers.items():
                wait_ready(
                    process, f"http://127.0.0.1:{port}/health/ready", tmp / f"{name}.log", name
                )
            figures: dict[str, dict[str, list[float]]] = {n: {"rps": [], "cpu": []} for n in sides}
            for round_ in range(args.rounds):
                for name in list(sides)[:: 1 if round_ % 2 == 0 else -1]:
                    process, port = servers[name]
                    before = group_cpu_seconds(process.pid)
                    done = subprocess.run(
                        ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s",
                         "--latency", "-s", str(script), f"http://127.0.0.1:{port}/evaluate"],
                        capture_output=True, text=True, timeout=args.seconds + 60, check=False,
                    )  # fmt: skip
                    used = group_cpu_seconds(process.pid) - before
                    found = parse_wrk(done.stdout)
                    if found["errors"]:
                        raise SystemExit(f"{name}: {found['errors']:g} errors in round {round_}")
                    figures[name]["rps"].append(found["rps"])
                    figures[name]["cpu"].append(used / (found["rps"] * args.seconds) * 1e6)
        finally:
            for process, _ in servers.values():
                with contextlib.suppress(ProcessLookupError):  # it may have exited already
                    os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            if args.base:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)])
    print(
        f"A/B, {args.rounds} rounds of {args.seconds} s, wrk -c{args.connections}, 2 workers each"
    )
    for name in sides:
        rps, cpu = figures[name]["rps"], figures[name]["cpu"]
        label = args.base if name == "base" else "this checkout"
        if not args.base:
            label = "without" if name == "base" else "with " + " ".join(args.settings)
        print(
            f"  {label:>14}: {statistics.median(rps):,.0f} req/s (median; {min(rps):,.0f} to "
            f"{max(rps):,.0f}), {statistics.median(cpu):,.1f} µs of server CPU per request"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
