"""The targets of issue "Speed", as data: which figure of which row, compared with which other
row, against what threshold. Changing a target is changing its line here; one function judges
them all alike."""

from __future__ import annotations

from dataclasses import dataclass

from bench.lineup import BATCH_ITEMS
from bench.report import ratio
from bench.rounds import Row


@dataclass(frozen=True)
class Goal:
    """`figure` (a `Row` property) of the `row` role at least (`at_most`: at most) `threshold`
    times the same figure of the `base` role, or `threshold` itself without a base.

    Roles: bare, bare_post, evaluate and batch (the first engine), cerbos, memory. `name` is
    formatted with the roles' row names and `threshold`; `detail`, what was measured, with
    `value`, `base` and `seconds` (of the memory run); without it, the ratio of the two.
    """

    name: str
    figure: str
    row: str
    threshold: float
    base: str | None = None
    at_most: bool = False
    detail: str = ""

    def met(self, value: float, base: float) -> bool:
        bound = self.threshold * base if self.base else self.threshold
        return value <= bound if self.at_most else value >= bound


TARGETS = (
    Goal("{evaluate} >= {threshold:.0%} of bare requests/s", "rps", "evaluate", 0.6, "bare"),
    Goal(
        "{evaluate} >= {threshold:.0%} of the {bare_post} requests/s",
        "rps",
        "evaluate",
        0.6,
        "bare_post",
    ),
    Goal(
        "{evaluate} p99 <= {threshold:g}x bare p99",
        "p99",
        "evaluate",
        2.0,
        "bare",
        at_most=True,
        detail="{value:,.2f} ms vs {base:,.2f} ms",
    ),
    Goal(
        f"batch of {BATCH_ITEMS} >= {{threshold:g}}x single-call decisions/s",
        "decisions",
        "batch",
        5.0,
        "evaluate",
    ),
    Goal("{evaluate} >= {threshold:g}x Cerbos decisions/s", "decisions", "evaluate", 2.0, "cerbos"),
    Goal(
        "RSS of one worker <= {threshold:g} MiB after 60 s of /evaluate",
        "last_rss",
        "memory",
        150.0,
        at_most=True,
        detail="{value:.0f} MiB after {seconds} s",
    ),
)


def judge(rows: list[Row], cerbos: Row | None, memory: Row | None, seconds: int) -> list[str]:
    """Each target: met, MISSED, or n/a when a row it needs was not measured. Targets on
    Cerbos or memory are left out when that was not run (None)."""
    bare, bare_post, evaluate, batch = rows[:4]  # evaluate and batch: the first engine
    roles = {
        "bare": bare,
        "bare_post": bare_post,
        "evaluate": evaluate,
        "batch": batch,
        "cerbos": cerbos,
        "memory": memory,
    }
    names = {role: row.target for role, row in roles.items() if row}
    lines = []
    for goal in TARGETS:
        needs = [roles[goal.row], *([roles[goal.base]] if goal.base else [])]
        measured = [row for row in needs if row]
        if len(measured) < len(needs):
            continue  # not run at all
        name = goal.name.format(threshold=goal.threshold, **names)
        if not all(row.ok for row in measured):
            lines.append(f"- n/a: {name} (not measured)")
            continue
        value = getattr(measured[0], goal.figure)
        base = getattr(measured[1], goal.figure) if goal.base else 0.0
        detail = goal.detail.format(value=value, base=base, seconds=seconds)
        lines.append(
            f"- {'met' if goal.met(value, base) else 'MISSED'}: {name} "
            f"({detail or ratio(value, base)})"
        )
    return lines
