"""The results as markdown: the machine they ran on (figures from different machines do not
compare), the table of medians, each round's requests/s, and the file they are kept in."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from bench.rounds import LOPSIDED, RETRIES, Row, split_text
from bench.servers import ROOT

RESULTS = ROOT / "bench" / "results"


def machine(wrk: str, cerbos: str) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    memory = f"{int(meminfo.group(1)) / 1024**2:.1f} GiB" if meminfo else "unknown"
    return [
        f"- CPU: {cpu.group(1) if cpu else platform.machine()}, {os.cpu_count()} cores",
        f"- memory: {memory}",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Python: {platform.python_version()}",
        f"- wrk: {wrk}",
        f"- Cerbos: {cerbos}",
    ]


def table(rows: list[Row], cerbos: Row | None) -> list[str]:
    bare = rows[0]
    lines = [
        "| target | requests/s | decisions/s | p50 ms | p99 ms | RSS MiB | share of bare "
        "| x Cerbos decisions/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if not row.ok:
            lines.append(f"| {row.target} | not measured (below) | | | | | | | |")
            continue
        handshake_row = row is not cerbos and not row.target.startswith("memory")
        share = ratio(row.rps, bare.rps) if handshake_row and bare.ok else "-"
        versus = ratio(row.decisions, cerbos.decisions) if cerbos and cerbos.ok else "-"
        rss = " / ".join(f"{mib:.0f}" for mib in row.rss)
        if row.target.startswith("memory"):
            rss = " -> ".join(f"{mib:.0f}" for mib in row.rss)  # before -> after
        lines.append(
            f"| {row.target} | {row.rps:,.0f} | "
            f"{f'{row.decisions:,.0f}' if row.decisions_per_request else '-'} | "
            f"{row.p50:,.2f} | {row.p99:,.2f} | {rss} | {share if row is not bare else '100%'} | "
            f"{versus if row.decisions_per_request else '-'} | {row.errors} |"
        )
    return lines


def per_round(rows: list[Row]) -> list[str]:
    """The requests/s of each round, in order, for the rows measured more than once."""

    def rounds(pairs: Iterable[tuple[dict[str, float], list[float]]]) -> str:
        return " / ".join(
            f"{r['rps']:,.0f}" + (f" ({split_text(split)})" if len(split) > 1 else "")
            for r, split in pairs
        )

    lines = [
        f"- {row.target}: {rounds(zip(row.rounds, row.cpu_split, strict=True))}"
        + (f"; set aside and run again: {rounds(row.set_aside)}" if row.set_aside else "")
        for row in rows
        if row.ok and len(row.rounds) > 1
    ]
    note = (
        "in brackets: each worker's share of the CPU time the server used in that round; a "
        f"round with a share above {LOPSIDED:.0%} is set aside and run again, at most "
        f"{RETRIES} times"
    )
    return ["", f"Requests/s in each round ({note}):", "", *lines] if lines else []


def ratio(value: float, base: float) -> str:
    if not base:
        return "-"
    share = value / base
    return f"{share:.0%}" if share < 1 else f"{share:.1f}x"


def write_results(lines: list[str]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"http-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
