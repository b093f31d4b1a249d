"""The rebuild comparison names every profile and field that differs."""

from streams.profiles.rebuild import RebuildReport, compare


def test_compare_reports_missing_extra_and_changed_fields():
    live = {"p1": {"id": "p1", "traits": {"a": 1}, "counts": 1}, "p2": {"id": "p2"}}
    rebuilt = {"p1": {"id": "p1", "traits": {"a": 2}, "counts": 1}, "p3": {"id": "p3"}}
    report = RebuildReport(schema="s")
    compare(live, rebuilt, report)
    assert report.only_live == ["p2"] and report.only_rebuilt == ["p3"]
    assert report.different == {"p1": ["traits"]}
    assert not report.identical
    same = RebuildReport(schema="s")
    compare(live, live, same)
    assert same.identical and same.live == 2
