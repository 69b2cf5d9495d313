"""What an explained decision costs: `evaluate(..., explain=True)` (the rule-by-rule trace,
the variables and the alternatives) against a plain one, on `default` with each example
request, in process, in alternation.

    python bench/explain.py [--engine cel-expr-python]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.policy import evaluate, load_policies  # noqa: E402
from service.policy.request import decode_request  # noqa: E402

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)


def per_call_us(call: Callable[[], object], number: int = 100) -> float:
    started = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - started) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="cel-expr-python")
    args = parser.parse_args()
    policy_set = load_policies(ROOT / "policies", engine=args.engine, compare_engines=False)
    print("| request | plain | explained (target ≤ 2,000 µs) | alternatives found |")
    print("|---|---:|---:|---:|")
    for sample in sorted((ROOT / "examples" / "requests").glob("*.json")):
        request = decode_request(sample.read_bytes())
        plain, explained = [], []
        decide = partial(evaluate, policy_set, "default", request, now=NOW)
        for _ in range(9):  # in alternation: the two figures are of one moment
            plain.append(per_call_us(decide))
            explained.append(per_call_us(partial(decide, explain=True), 30))
        trace = evaluate(policy_set, "default", request, now=NOW, explain=True).trace
        found = len(trace.alternatives) if trace is not None else 0
        print(
            f"| {sample.stem} | {statistics.median(plain):,.0f} µs "
            f"| {statistics.median(explained):,.0f} µs | {found} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
