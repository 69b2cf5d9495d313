"""The benchmark tools keep working: what they measure is never asserted (bench/README.md),
only that they run, answer as their peers would, and read their load generator right."""

from __future__ import annotations

import re
import subprocess
import sys

from litestar.testing import TestClient

from bench.bare import PATH, app
from bench.throughput import parse_wrk
from tests.api.conftest import sample
from tests.api.server import ROOT

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8080/evaluate
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.52ms    2.10ms  40.12ms   80.00%
    Req/Sec     9.45k   512.33    10.20k    70.00%
  Latency Distribution
     50%    6.35ms
     75%    7.01ms
     90%    8.20ms
     99%   13.55ms
  94420 requests in 10.00s, 120.50MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   9442.00
Transfer/sec:     12.05MB
"""


def test_wrk_output_is_read_into_rate_percentiles_and_errors() -> None:
    assert parse_wrk(WRK_OUTPUT) == {"rps": 9442.0, "p50": 6.35, "p99": 13.55, "errors": 7}


def test_the_bare_endpoint_decodes_the_evaluate_body_strictly() -> None:
    with TestClient(app()) as client:
        ok = client.post(PATH, json={"request": sample(), "policy": "default"})
        assert (ok.status_code, ok.json()) == (200, {"policy": "default"})
        # The same type as POST /evaluate: a request without a requester does not decode.
        assert client.post(PATH, json={"request": {"recipient": {}}}).status_code == 400


def test_the_in_process_bench_times_every_piece_of_a_decision() -> None:
    command = [sys.executable, "bench/evaluate.py", "--seconds", "0.05", "--pieces"]
    done = subprocess.run(
        [*command, "--engines", "cel-expr-python"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"^default\s+\d+$", out, re.M), out
    pieces = out[out.index("pieces of one decision") :].splitlines()[1:]
    timed = [re.fullmatch(r"\s+(\S.*?)\s+(\d+\.\d)", line) for line in pieces]
    assert all(timed), pieces
    labels = [m.group(1) for m in timed if m]
    assert len(labels) == 9
    assert "the route's decide(): the clock, evaluate(), metrics" in labels
    assert all(float(m.group(2)) > 0 for m in timed if m)
