"""wrk, the load generator every target is driven with: the same settings for all, a Lua script
for the POST bodies, and its text output read into figures."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
"""


def wrk_version() -> str:
    if not shutil.which("wrk"):
        raise SystemExit("needs wrk: apt-get install wrk (Debian/Ubuntu package `wrk`)")
    # `wrk -v` prints its version and usage, exits 1.
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].split(" Copyright")[0] if out else "unknown"


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
