"""What is measured and how often: each target once a round, in order, so a noisy moment
weighs on all of them alike; a round that measured the kernel's placement of connections
rather than the server is set aside and run again."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from bench.servers import cpu_seconds, rss_mib
from bench.wrk import wrk

LOPSIDED = 0.8  # a worker's share of the CPU time above which a round is run again
RETRIES = 2


@dataclass
class Row:
    """One line of the table: a target and what wrk and /proc said about it."""

    target: str
    decisions_per_request: int = 1
    rounds: list[dict[str, float]] = field(default_factory=list)  # wrk's figures, one a round
    cpu_split: list[list[float]] = field(default_factory=list)  # each worker's share, a round
    # Lopsided rounds run again (see `measure_rounds`): their figures and CPU split.
    set_aside: list[tuple[dict[str, float], list[float]]] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)  # MiB, one per serving process
    note: str = ""  # e.g. why a server did not start
    ok: bool = True

    def _median(self, key: str) -> float:
        return median(r[key] for r in self.rounds) if self.rounds else 0.0

    @property
    def rps(self) -> float:
        return self._median("rps")

    @property
    def p50(self) -> float:
        return self._median("p50")

    @property
    def p99(self) -> float:
        return self._median("p99")

    @property
    def errors(self) -> int:
        every = [*self.rounds, *(r for r, _ in self.set_aside)]  # none hidden
        return int(sum(r["errors"] for r in every))

    @property
    def decisions(self) -> float:
        return self.rps * self.decisions_per_request

    @property
    def last_rss(self) -> float:
        """The last memory reading: of the last serving process, or after a memory run."""
        return self.rss[-1]


@dataclass
class Target:
    """A row measured once a round: where wrk sends what, and whose memory to read after."""

    row: Row
    body: str | None = None
    url: str = ""  # set once its server is up and verified
    pids: list[int] = field(default_factory=list)


def measure(row: Row, url: str, args: argparse.Namespace, body: str | None, tmp: Path) -> Row:
    """One more round of `row`."""
    row.rounds.append(wrk(url, args, body, tmp))
    return row


def measure_rounds(targets: list[Target], args: argparse.Namespace, tmp: Path) -> None:
    """Each round drives every started target once, in order; then reads their memory.

    A round in which one worker used more than `LOPSIDED` of the server's CPU time measured
    where the kernel put wrk's burst of connections (uvicorn's workers share one listening
    socket), not the server: it is set aside and run again, at most `RETRIES` times; the
    last try counts whatever its split. Set-aside rounds are reported with the others.
    """
    started = [target for target in targets if target.row.ok]
    for number in range(1, args.rounds + 1):
        for target in started:
            for attempt in range(RETRIES + 1):
                before = [cpu_seconds(pid) for pid in target.pids]
                measure(target.row, target.url, args, target.body, tmp)
                used = [cpu_seconds(pid) - b for pid, b in zip(target.pids, before, strict=True)]
                split = [u / (sum(used) or 1) for u in used]
                target.row.cpu_split.append(split)
                rps = target.row.rounds[-1]["rps"]
                print(
                    f"round {number}/{args.rounds}: {target.row.target}: {rps:,.0f} requests/s"
                    f" ({split_text(split)})",
                    flush=True,
                )
                if len(split) < 2 or max(split) <= LOPSIDED or attempt == RETRIES:
                    break
                target.row.set_aside.append((target.row.rounds.pop(), target.row.cpu_split.pop()))
    for target in started:
        target.row.rss = [rss_mib(pid) for pid in target.pids]


def split_text(shares: list[float]) -> str:
    """Each worker's share of the CPU time, e.g. `50/50%`."""
    return "/".join(f"{share:.0%}".rstrip("%") for share in shares) + "%"
