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

This file reads the options and puts the report together; the parts are bench/wrk.py,
servers.py, cerbos_peer.py, lineup.py (the targets and their checks), rounds.py, report.py and
targets.py (the targets of issue "Speed", as data).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, only bench/ is on the path: the project's root holds `bench` and `service`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.cerbos_peer import CERBOS_BINARY, cerbos_version
from bench.lineup import EXAMPLES, SAMPLE, run_memory, run_servers
from bench.report import machine, per_round, table, write_results
from bench.servers import ROOT
from bench.targets import judge
from bench.wrk import wrk_version


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
        *judge(rows, cerbos, memory, args.memory_seconds),
    ]
    print("\n".join(report))
    print(f"\nwritten to {write_results(report).relative_to(ROOT)}")
    return 0 if all(row.ok for row in all_rows) else 1  # a missed target is a figure, not a failure


if __name__ == "__main__":
    sys.exit(main())
