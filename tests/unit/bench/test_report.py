"""The harness's results: medians and spreads of repeats, ratios to baselines, targets
judged (met, not met, not measured), and the files it writes."""

from __future__ import annotations

import math
import time

import orjson

from streams.bench.meter import CpuMeter, per_event_us
from streams.bench.report import TARGETS, Results, Target, judged, to_json, to_markdown, write


def _results() -> Results:
    r = Results(meta={"started": "2026-12-02 08:00 UTC", "machine": "2 cores", "repeat": 3})
    for v in (100.0, 300.0, 200.0):
        r.add("noop.rate@100000", "no-op", "ev/s", v)
    for v in (90.0, 80.0, 95.0):
        r.add("e2e.rate@100000", "profile stage", "ev/s", v, baseline="noop.rate@100000")
    return r


def test_median_spread_and_ratio_of_repeats():
    r = _results()
    noop, e2e = r.figures["noop.rate@100000"], r.figures["e2e.rate@100000"]
    assert noop.median == 200.0 and noop.spread == (100.0, 300.0)
    assert e2e.median == 90.0 and e2e.spread == (80.0, 95.0)
    assert r.ratio("e2e.rate@100000") == 90.0 / 200.0
    assert math.isnan(r.ratio("noop.rate@100000"))  # no baseline of its own


def test_targets_are_met_not_met_or_not_measured():
    r = _results()
    at_least = Target(12, "e2e / no-op", lambda f: f["e2e.rate@100000"].median
                      / f["noop.rate@100000"].median, 0.85)
    at_most = Target(12, "e2e rate at most", lambda f: f["e2e.rate@100000"].median, 100,
                     at_least=False)
    missing = Target(12, "growth", lambda f: f["e2e.rate@1000000"].median, 0.75)
    assert at_least.judge(r.figures) == (0.45, False)
    assert at_most.judge(r.figures) == (90.0, True)
    value, met = missing.judge(r.figures)
    assert met is None and math.isnan(value)


def test_every_issue_target_is_listed_and_judged():
    rows = judged(_results())
    assert len(rows) == len(TARGETS)
    assert {t.issue for t in TARGETS} == {3, 4, 11, 12}
    ratio = next(r for r in rows if r["target"].startswith("end to end / no-op Faust agent, "))
    assert ratio["measured"] == 0.45 and ratio["met"] is False


def test_json_and_markdown_hold_every_figure_and_target(tmp_path):
    r = _results()
    doc = orjson.loads(to_json(r))
    fig = {f["key"]: f for f in doc["figures"]}
    assert fig["e2e.rate@100000"]["samples"] == [90.0, 80.0, 95.0]
    assert fig["e2e.rate@100000"]["median"] == 90.0
    assert fig["e2e.rate@100000"]["ratio"] == 0.45
    assert len(doc["targets"]) == len(TARGETS)
    md = to_markdown(r)
    assert "| profile stage | 90.0 ev/s | 80.0 – 95.0 | 3 | no-op | 0.450 |" in md
    assert "**not met**" in md and "not measured" in md
    json_path, md_path = write(r, tmp_path / "out", "bench-x")
    assert orjson.loads(json_path.read_bytes()) == doc
    assert md_path.read_text() == md


def test_cpu_meter_counts_what_each_group_spent_between_snapshots():
    before = {"worker": {1: 1.0, 2: 5.0}, "fold": {}}
    after = {"worker": {1: 1.5, 2: 6.0}, "fold": {3: 0.25}}  # 3 started in the window
    spent = CpuMeter.spent(before, after)
    assert spent == {"worker": 1.5, "fold": 0.25}
    assert per_event_us(spent, 1000) == {"worker": 1500.0, "fold": 250.0}


def test_cpu_meter_reads_this_process():
    meter = CpuMeter()
    meter.add_self("bench")
    a = meter.snapshot()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn a little CPU (ticks are 10 ms)
        pass
    b = meter.snapshot()
    assert CpuMeter.spent(a, b)["bench"] > 0
