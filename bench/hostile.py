"""The hardening figures (docs/operations.md, "Bounds"): what hostile clients and policy files
cost, measured as an attacker would, against a real server on 127.0.0.1.

    python bench/hostile.py                 # all, against `handshake serve`
    python bench/hostile.py pipeline --stock  # the same attack on uvicorn's stock protocol

- `pipeline`: one client pipelines `POST /evaluate` without reading, reconnecting whenever the
  server closes it, for `--seconds`; the worker's RSS before, at the end, and 5 s after.
- `idle`: 150 connections that never send; seconds until the server has closed them all.
- `runaway`: the costliest request the load-time budget lets a policy make (a 60 KB attribute
  doubled seven times, then twice more, as variables and rules): time and added RSS.
- `check`: `handshake check` on each hostile policy file: wall time and peak RSS.

Every loop is bounded in time and bytes; servers are stopped by their own process id.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import attacks  # noqa: E402
from bench.servers import free_port  # noqa: E402

TOKEN = "bench-hostile-token-0123456789"
REQUEST = (ROOT / "examples" / "requests" / "stranger.json").read_bytes()
BODY = b'{"request": ' + REQUEST + b"}"
EVALUATE = (
    b"POST /evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (TOKEN.encode(), len(BODY), BODY)
)


@contextmanager
def server(
    stock: bool, policies: str = "policies"
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "HANDSHAKE_API_TOKENS": TOKEN, "HANDSHAKE_LOG_LEVEL": "warning"}
    env["HANDSHAKE_POLICIES"] = policies
    if stock:  # the same app under uvicorn's own httptools protocol
        env |= {"HANDSHAKE_PORT": str(port)}
        command = ["-m", "uvicorn", "--factory", "service.server:app_from_environment"]
        command += ["--http", "httptools", "--port", str(port), "--log-level", "warning"]
    else:
        command = ["-m", "service", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now, or at its highest so far (`VmHWM`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def pipeline(stock: bool, seconds: float) -> None:
    with server(stock) as (port, process):
        before = rss_mib(process.pid)
        sent, connections = attacks.pipeline(port, EVALUATE, seconds)
        end = rss_mib(process.pid)
        time.sleep(5)
        after = rss_mib(process.pid)
        print(
            f"pipeline ({'stock uvicorn' if stock else 'handshake serve'}, {seconds:g} s, "
            f"{sent / 2**20:,.0f} MiB sent on {connections} connection(s)): RSS {before:.0f} MiB "
            f"before, +{end - before:.0f} MiB at the end, +{after - before:.0f} MiB 5 s after"
        )


def idle(stock: bool, count: int = 150, limit: float = 40) -> None:
    with server(stock) as (port, _):
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        started, open_ = time.monotonic(), set(socks)
        while open_ and time.monotonic() - started < limit:
            for sock in select.select(list(open_), [], [], 0.5)[0]:
                if not sock.recv(1024):
                    open_.discard(sock)
        for sock in socks:
            sock.close()
        where = f"{len(open_)} still open after {limit:g} s" if open_ else "all closed"
        print(f"idle ({count} connections): {where} at {time.monotonic() - started:.1f} s")


def runaway() -> None:
    request = json.loads(REQUEST) | {"attributes": {"s": "x" * 60_000}}
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "runaway.yaml").write_text(attacks.RUNAWAY_POLICY)
        with server(False, directory) as (port, process):
            for explain in (False, True):
                body = json.dumps({"policy": "runaway", "request": request, "explain": explain})
                before = rss_mib(process.pid, "VmHWM")
                started = time.monotonic()
                with socket.create_connection(("127.0.0.1", port)) as sock:
                    head = (
                        f"POST /evaluate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                    )
                    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body.encode())
                    answer = b""
                    while chunk := sock.recv(1 << 20):
                        answer += chunk
                seconds = time.monotonic() - started
                print(
                    f"runaway (explain={explain}): {answer.split(b' ', 2)[1].decode()} in "
                    f"{seconds * 1000:.0f} ms, {len(answer) / 2**20:.1f} MiB answered, peak RSS "
                    f"+{rss_mib(process.pid, 'VmHWM') - before:.0f} MiB"
                )


def check() -> None:
    header = "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"

    def policy(when: str, params: str = "") -> str:
        rule = f"rules:\n  - id: r\n    when: '{when}'\n    decision: accept\n    rationale: x\n"
        return header + params + rule + "default: {decision: ignore, rationale: x}\n"

    laughs = "".join(
        f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10 if i else ["x"] * 10) + "]\n"
        for i in range(9)
    )
    items = ", ".join(str(i) for i in range(30))
    dense = " && ".join(['request.message.contains("abcdefgh")'] * 20)
    rules = "".join(
        f"  - {{id: r{i}, when: '{dense} || request.message == \"x{i}\"', decision: accept,"
        " rationale: x}\n"
        for i in range(72)
    )
    files = {
        "largest-loadable (64 KiB of CEL)": (
            header + "rules:\n" + rules + "default: {decision: ignore, rationale: x}\n"
        ),
        "parentheses-300": policy("(" * 300 + "true" + ")" * 300),
        "sum-2000-terms": policy("+".join(["1"] * 2000) + " > 0"),
        "params-2000-deep": policy("true", "params:\n  p: " + "[" * 2000 + "]" * 2000 + "\n"),
        "billion-laughs": policy("true", "params:\n" + laughs),
        "exists-endsWith-30": policy(
            'params.xs.exists(x, x.endsWith("a"))', f"params:\n  xs: [{items}]\n"
        ),
    }
    for name, text in files.items():
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / "p.yaml").write_text(text)
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-c", _CHECK_REPORTING_PEAK, directory],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            seconds = time.monotonic() - started
            *lines, peak = (done.stdout + done.stderr).strip().splitlines()
            print(
                f"check {name}: {seconds:.2f} s, peak RSS {int(peak.split()[1]) / 1024:.0f} MiB, "
                f"exit {done.returncode}: {lines[0][:100]}"
            )


# `handshake check`, then this process's own peak RSS (VmHWM: since exec, unlike the rusage of
# a child, which also counts the parent's memory it was forked with).
_CHECK_REPORTING_PEAK = """
import sys
from service.cli import main
code = main(["check", sys.argv[1]])
status = open("/proc/self/status").read()
print("VmHWM", status.split("VmHWM:")[1].split()[0])
sys.exit(code)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", default=["pipeline", "idle", "runaway", "check"])
    parser.add_argument("--stock", action="store_true", help="uvicorn's own protocol")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    print(json.dumps({"machine": os.uname().nodename, "cores": os.cpu_count()}))
    for what in args.what:
        if what == "pipeline":
            pipeline(args.stock, args.seconds)
        elif what == "idle":
            idle(args.stock)
        elif what == "runaway":
            runaway()
        elif what == "check":
            check()


if __name__ == "__main__":
    main()
