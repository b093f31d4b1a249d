"""The harness's results: figures with their repeats, the targets of every issue, and the
JSON and Markdown files ``streams bench`` writes. Pure, apart from ``write``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson


@dataclass
class Figure:
    """One measured quantity and its repeats; ``baseline`` is the key of the figure it
    is divided by (the machine's limit for the same work, measured in the same run)."""

    key: str
    label: str
    unit: str
    samples: list[float] = field(default_factory=list)
    baseline: str | None = None

    @property
    def median(self) -> float:
        """The median of the samples (NaN when there are none)."""
        finite = [s for s in self.samples if math.isfinite(s)]
        return statistics.median(finite) if finite else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        """(min, max) of the samples."""
        finite = [s for s in self.samples if math.isfinite(s)]
        return (min(finite), max(finite)) if finite else (float("nan"), float("nan"))


@dataclass(frozen=True)
class Target:
    """An aim from an issue: ``measure`` turns the figures into one number, which must
    be ``>=`` (or ``<=``) ``aim``."""

    issue: int
    text: str
    measure: Callable[[dict[str, Figure]], float]
    aim: float
    at_least: bool = True
    unit: str = ""

    def judge(self, figures: dict[str, Figure]) -> tuple[float, bool | None]:
        """(measured value, met); met is None when a figure it needs was not measured
        (a quick run, or a part skipped)."""
        try:
            value = self.measure(figures)
        except (KeyError, ZeroDivisionError):
            return float("nan"), None
        if not math.isfinite(value):
            return value, None
        return value, (value >= self.aim if self.at_least else value <= self.aim)


@dataclass
class Results:
    """Everything one harness run measured, in the order measured."""

    meta: dict
    figures: dict[str, Figure] = field(default_factory=dict)

    def figure(self, key: str, label: str, unit: str, baseline: str | None = None) -> Figure:
        """The figure under ``key``, created on first use."""
        if key not in self.figures:
            self.figures[key] = Figure(key, label, unit, baseline=baseline)
        return self.figures[key]

    def add(self, key: str, label: str, unit: str, value: float,
            baseline: str | None = None) -> None:
        """Record one sample of a figure."""
        self.figure(key, label, unit, baseline).samples.append(float(value))

    def ratio(self, key: str) -> float:
        """A figure's median over its baseline's median (NaN without a baseline)."""
        fig = self.figures[key]
        if fig.baseline is None or fig.baseline not in self.figures:
            return float("nan")
        base = self.figures[fig.baseline].median
        return fig.median / base if base else float("nan")


def med(figures: dict[str, Figure], key: str) -> float:
    """The median of one figure; KeyError when it was not measured."""
    return figures[key].median


# The aims of every issue with a measured target. Keys are those harness.py records.
TARGETS: list[Target] = [
    Target(3, "collector: events/s accepted", lambda f: med(f, "collector.rate"), 20_000,
           unit="ev/s"),
    Target(3, "collector rate / raw producer rate",
           lambda f: med(f, "collector.rate") / med(f, "collector.raw_rate"), 0.5),
    Target(4, "end to end: events/s folded into profiles (100,000 profiles)",
           lambda f: med(f, "e2e.rate@100000"), 10_000, unit="ev/s"),
    Target(4, "end to end / no-op Faust agent (100,000 profiles)",
           lambda f: med(f, "e2e.rate@100000") / med(f, "noop.rate@100000"), 0.60),
    Target(4, "p99 produce -> committed profile at half the rate",
           lambda f: med(f, "e2e.p99_ms"), 1000, at_least=False, unit="ms"),
    Target(11, "end to end with the trigger rules on / off",
           lambda f: med(f, "triggers.e2e_ratio"), 0.90),
    Target(11, "messages due over a minute: p99 delay past due",
           lambda f: med(f, "triggers.spread_p99_ms"), 1000, at_least=False, unit="ms"),
    Target(11, "messages due at once: emitted per second",
           lambda f: med(f, "triggers.burst_rate"), 10_000, unit="msg/s"),
    Target(12, "profile stage CPU µs/event (worker + fold processes) / commit 6237909's",
           lambda f: med(f, "e2e.cpu_us.stage@100000") / med(f, "ref.cpu_us.stage@100000"),
           0.5, at_least=False),
    Target(12, "end to end / no-op Faust agent, same run (100,000 profiles)",
           lambda f: med(f, "e2e.rate@100000") / med(f, "noop.rate@100000"), 0.85),
    Target(12, "growth: rate at 1,000,000 profiles / rate at 10,000",
           lambda f: med(f, "e2e.rate@1000000") / med(f, "e2e.rate@10000"), 0.75),
    Target(12, "PostgreSQL bytes per profile at 1,000,000 profiles",
           lambda f: med(f, "e2e.bytes_per_profile@1000000"), 1500, at_least=False, unit="B"),
]


def judged(results: Results) -> list[dict]:
    """Every target with its measured value and verdict, as plain dicts."""
    out = []
    for t in TARGETS:
        value, met = t.judge(results.figures)
        out.append({"issue": t.issue, "target": t.text, "measured": value,
                    "aim": ("≥ " if t.at_least else "≤ ") + _num(t.aim, t.unit),
                    "met": met})
    return out


def _num(value: float, unit: str = "") -> str:
    if not math.isfinite(value):
        return "—"
    if unit in ("ratio", "") and abs(value) < 10:
        text = f"{value:.3f}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.1f}"
    return f"{text} {unit}".strip() if unit not in ("", "ratio") else text


def to_json(results: Results) -> bytes:
    """The whole run: metadata, every figure with its samples, median, spread and ratio,
    and the targets judged."""
    figures = []
    for key, fig in results.figures.items():
        lo, hi = fig.spread
        figures.append({**asdict(fig), "median": fig.median, "min": lo, "max": hi,
                        "ratio": results.ratio(key)})
    return orjson.dumps({"meta": results.meta, "figures": figures,
                         "targets": judged(results)},
                        option=orjson.OPT_INDENT_2)


def to_markdown(results: Results) -> str:
    """Two tables: every figure (median, spread, repeats, baseline, ratio) and every
    target beside its measured figure and whether it is met."""
    meta = results.meta
    lines = [f"### `streams bench` — {meta.get('started', '')}", "",
             f"{meta.get('machine', '')}; commit {meta.get('commit', '?')}; "
             f"{meta.get('repeat', '?')} repeats{' (quick)' if meta.get('quick') else ''}; "
             f"{meta.get('seconds', 0):,.0f} s in all.", "",
             "| figure | median | min – max | n | baseline | ratio |",
             "|---|---|---|---|---|---|"]
    for key, fig in results.figures.items():
        lo, hi = fig.spread
        base = results.figures.get(fig.baseline) if fig.baseline else None
        ratio = results.ratio(key)
        lines.append(
            f"| {fig.label} | {_num(fig.median, fig.unit)} | {_num(lo)} – {_num(hi)} "
            f"| {len(fig.samples)} | {base.label if base else ''} "
            f"| {'' if not math.isfinite(ratio) else f'{ratio:.3f}'} |")
    lines += ["", "| issue | target | measured | aim | met |", "|---|---|---|---|---|"]
    for row in judged(results):
        met = {True: "met", False: "**not met**", None: "not measured"}[row["met"]]
        lines.append(f"| #{row['issue']} | {row['target']} | {_num(row['measured'])} "
                     f"| {row['aim']} | {met} |")
    return "\n".join(lines) + "\n"


def write(results: Results, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``folder`` (created). Blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_bytes(to_json(results))
    md_path.write_text(to_markdown(results))
    return json_path, md_path
