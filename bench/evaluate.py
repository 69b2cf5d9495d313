"""Microseconds per decision for the bundled policies, in process (no HTTP).

    python bench/evaluate.py [--policies DIR] [--seconds S] [--engines a,b]

For each policy and each CEL engine, evaluates the sample requests in examples/requests/
round-robin in batches for about S seconds and prints the median per-decision time of the
batches (the whole `evaluate()`: conversion, rules, templates, decision id), and the ratio of
the engines in the same run. Also prints how long loading and compiling the directory takes.
Figures go to bench/README.md with the machine they ran on; never assert timings in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from service.policy import ConnectionRequest, PolicySet, evaluate, load_policies
from service.policy.engines import ENGINES
from service.policy.request import decode_request

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=Path, default=ROOT / "policies")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per policy and engine")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    args = parser.parse_args()
    engines = args.engines.split(",")

    sets, load_ms = {}, {}
    for engine in engines:
        started = time.perf_counter()
        sets[engine] = load_policies(args.policies, engine=engine)
        load_ms[engine] = (time.perf_counter() - started) * 1000
    requests = [
        decode_request(p.read_bytes()) for p in sorted(ROOT.glob("examples/requests/*.json"))
    ]
    now = datetime(2026, 11, 22, 9, tzinfo=UTC)

    print(
        f"# {platform.node()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    for engine in engines:
        print(
            f"load + compile {len(sets[engine].policies)} policies ({engine}): "
            f"{load_ms[engine]:.0f} ms"
        )
    print(f"{'policy':30}" + "".join(f"{e + ' µs':>22}" for e in engines) + f"{'ratio':>8}")
    for name in sorted(sets[engines[0]].policies):
        medians = [median_us(sets[e], name, requests, now, args.seconds) for e in engines]
        ratio = f"{medians[-1] / medians[0]:7.0f}x" if len(medians) > 1 else ""
        print(f"{name:30}" + "".join(f"{m:22.0f}" for m in medians) + ratio)
    return 0


def median_us(
    policy_set: PolicySet,
    name: str,
    requests: list[ConnectionRequest],
    now: datetime,
    seconds: float,
) -> float:
    per_decision: list[float] = []
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(per_decision) < 5:
        batch = 20
        start = time.perf_counter()
        for i in range(batch):
            evaluate(policy_set, name, requests[(count + i) % len(requests)], now=now)
        per_decision.append((time.perf_counter() - start) / batch * 1e6)
        count += batch
    return statistics.median(per_decision)


if __name__ == "__main__":
    sys.exit(main())
