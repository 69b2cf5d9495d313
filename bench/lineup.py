"""The targets in the order of the table, each server started up front and checked to decide
the samples as expected before any load: a figure from a server that decides wrongly would
compare nothing. A server that does not start is marked in its rows and the run goes on."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.bare import PATH as BARE_PATH
from bench.cerbos_peer import cerbos, cerbos_body, cerbos_compile, cerbos_decisions, install_cerbos
from bench.rounds import Row, Target, measure, measure_rounds
from bench.servers import ROOT, StartError, bare_post, handshake, rss_mib

EXAMPLES = ROOT / "examples" / "requests"
SAMPLE = "old-colleague"
EXPECTED = ("defer", "reconnect-first")  # the sample's (decision, rule) under `default`
BATCH_ITEMS = 100
BARE_POST_ROW = "bare POST, litestar + msgspec (bench/bare.py)"

T = TypeVar("T")


def evaluate_body(request: dict[str, Any]) -> dict[str, Any]:
    return {"request": request}  # no `policy`: the server's default policy, `default`


def handshake_decisions(url: str, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(decision, rule) for each example request, from POST /evaluate."""
    decisions = {}
    for name, request in examples.items():
        answer = httpx.post(f"{url}/evaluate", json=evaluate_body(request), timeout=30)
        answer.raise_for_status()
        decision = answer.json()
        if decision["errors"]:
            raise SystemExit(f"FAILED: handshake reported errors for {name}: {decision['errors']}")
        decisions[name] = (decision["decision"], decision["rule"])
    return decisions


def check_batch(url: str, body: str) -> None:
    answer = httpx.post(
        f"{url}/evaluate/batch",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    answer.raise_for_status()
    results = answer.json()["results"]
    got = {(r["decision"]["decision"], r["decision"]["rule"]) for r in results if r["decision"]}
    if len(results) != BATCH_ITEMS or got != {EXPECTED}:
        raise SystemExit(f"FAILED: batch of {BATCH_ITEMS} gave {len(results)} results, {got}")


def verify(target: str, got: dict[str, Any], reference: dict[str, Any]) -> None:
    """The sample must give EXPECTED, and every example what the first verified target gave."""
    if got[SAMPLE] != EXPECTED:
        raise SystemExit(f"FAILED: {target} decided {got[SAMPLE]} for {SAMPLE}, not {EXPECTED}")
    if reference and got != reference:
        raise SystemExit(f"FAILED: {target} decided {got}; expected {reference}")
    reference.update(got)
    print(f"verified {target}: {SAMPLE} -> {EXPECTED[0]} ({EXPECTED[1]})", flush=True)


def start(
    servers: ExitStack, server: AbstractContextManager[T], name: str, rows: list[Row]
) -> T | None:
    """Keep `server` running until `servers` closes; None, `rows` marked, if it does not start."""
    try:
        return servers.enter_context(server)
    except StartError as exc:
        for row in rows:
            row.ok, row.note = False, f"did not start: {exc}"
        print(f"{name} did not start: {exc}", file=sys.stderr, flush=True)
        return None


def start_cerbos(
    servers: ExitStack, tmp: Path, examples: dict[str, Any], ref: dict[str, Any]
) -> Target:
    binary = install_cerbos()
    cerbos_compile(binary)
    body = json.dumps(cerbos_body(SAMPLE, examples[SAMPLE]))
    target = Target(Row("cerbos POST /api/check/resources"), body)
    if server := start(servers, cerbos(binary, tmp), "cerbos", [target.row]):
        url, pid = server
        verify("cerbos", cerbos_decisions(url, examples), ref)
        target.url, target.pids = f"{url}/api/check/resources", [pid]
    return target


def start_handshake(
    servers: ExitStack,
    args: argparse.Namespace,
    tmp: Path,
    examples: dict[str, Any],
    ref: dict[str, Any],
) -> list[Target]:
    """The bare servers, then one per engine; the targets in the order of the table."""
    body = json.dumps(evaluate_body(examples[SAMPLE]))
    batch_body = json.dumps({"items": [evaluate_body(examples[SAMPLE])] * BATCH_ITEMS})
    bare = Target(Row("bare GET /health/live", decisions_per_request=0))
    # Bare does not depend on the engine: its own server, without the engine variable.
    server = start(servers, handshake("default", args.workers, tmp), "handshake", [bare.row])
    if server:
        url, pids = server
        bare.url, bare.pids = f"{url}/health/live", pids
    bare_post_target = Target(Row(BARE_POST_ROW, decisions_per_request=0), body)
    server = start(servers, bare_post(args.workers, tmp), "bare POST", [bare_post_target.row])
    if server:
        url, pids = server
        bare_post_target.url, bare_post_target.pids = f"{url}{BARE_PATH}", pids
    targets = [bare, bare_post_target]
    for index, engine in enumerate(args.engines):
        evaluate = Target(Row(f"POST /evaluate ({engine})"), body)
        batch = Target(
            Row(f"POST /evaluate/batch of {BATCH_ITEMS} ({engine})", BATCH_ITEMS), batch_body
        )
        targets += [evaluate, batch] if index == 0 else [evaluate]
        name = f"handshake ({engine})"
        server = start(
            servers, handshake(engine, args.workers, tmp), name, [evaluate.row, batch.row]
        )
        if not server:
            continue
        url, pids = server
        verify(name, handshake_decisions(url, examples), ref)
        evaluate.url, evaluate.pids = f"{url}/evaluate", pids
        if index == 0:
            check_batch(url, batch_body)
            batch.url, batch.pids = f"{url}/evaluate/batch", pids
    return targets


def run_servers(
    args: argparse.Namespace, tmp: Path, examples: dict[str, Any], ref: dict[str, Any]
) -> tuple[list[Row], Row | None]:
    """Start and verify every server, measure the rounds, stop them all: the Handshake rows
    and the Cerbos row (None with --no-cerbos)."""
    with ExitStack() as servers:
        # Cerbos first: a failed install or a policy mismatch stops the run before the long part.
        peer = None if args.no_cerbos else start_cerbos(servers, tmp, examples, ref)
        targets = start_handshake(servers, args, tmp, examples, ref)
        measure_rounds([*targets, *([peer] if peer else [])], args, tmp)
    return [target.row for target in targets], peer.row if peer else None


def run_memory(args: argparse.Namespace, tmp: Path, examples: dict[str, Any]) -> Row:
    """One worker, args.memory_seconds of /evaluate: resident memory before and after."""
    engine = args.engines[0]
    row = Row(f"memory: POST /evaluate ({engine}), 1 worker, {args.memory_seconds} s")
    body = json.dumps(evaluate_body(examples[SAMPLE]))
    load = argparse.Namespace(**{**vars(args), "seconds": args.memory_seconds})
    try:
        with handshake(engine, 1, tmp) as (url, pids):
            before = rss_mib(pids[0])
            measure(row, f"{url}/evaluate", load, body, tmp)
            row.rss = [before, rss_mib(pids[0])]
    except StartError as exc:
        row.ok, row.note = False, f"did not start: {exc}"
    return row
