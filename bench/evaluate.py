"""Microseconds per decision for the bundled policies, in process (no HTTP).

    python bench/evaluate.py [--policies DIR] [--seconds S]

For each policy, evaluates the sample requests in examples/requests/ round-robin in batches
for about S seconds and prints the median and best per-decision time of the batches. Also
prints how long loading and compiling the whole directory takes. Figures go to
bench/README.md with the machine they ran on; never assert timings in tests.
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

from service.policy import evaluate, load_policies
from service.policy.request import decode_request

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=Path, default=ROOT / "policies")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per policy")
    args = parser.parse_args()

    started = time.perf_counter()
    policy_set = load_policies(args.policies)
    load_ms = (time.perf_counter() - started) * 1000
    requests = [
        decode_request(p.read_bytes()) for p in sorted(ROOT.glob("examples/requests/*.json"))
    ]
    now = datetime(2026, 11, 22, 9, tzinfo=UTC)

    print(
        f"# {platform.node()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"load + compile {len(policy_set.policies)} policies: {load_ms:.0f} ms")
    print(f"{'policy':32} {'median µs':>10} {'best µs':>10} {'decisions':>10}")
    for name in sorted(policy_set.policies):
        per_decision: list[float] = []
        count = 0
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline or len(per_decision) < 5:
            batch = 20
            start = time.perf_counter()
            for i in range(batch):
                evaluate(policy_set, name, requests[(count + i) % len(requests)], now=now)
            per_decision.append((time.perf_counter() - start) / batch * 1e6)
            count += batch
        print(
            f"{name:32} {statistics.median(per_decision):10.0f} {min(per_decision):10.0f} "
            f"{count:10d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
