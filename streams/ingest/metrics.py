"""The ingestion domain's metrics, in one place: dotted names and their Prometheus series.

The dotted name is what dashboards and logs call a metric; the Prometheus name is derived
from it (dots become underscores).
"""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_ACCEPTED = "ingest.collector.events_accepted"
EVENTS_REJECTED = "ingest.collector.events_rejected"
REQUESTS_REFUSED = "ingest.collector.requests_refused"

_DESCRIPTIONS = {
    EVENTS_ACCEPTED: "Events the collector wrote to an event topic, by kind and source.",
    EVENTS_REJECTED: "Events of a batch the collector dead-lettered, by source.",
    REQUESTS_REFUSED: "Requests refused whole (401, 400, 413, 429, 503), by status.",
}
_LABELS = {
    EVENTS_ACCEPTED: ("kind", "source"),
    EVENTS_REJECTED: ("source",),
    REQUESTS_REFUSED: ("status",),
}

COUNTERS: dict[str, Counter] = {
    name: Counter(name.replace(".", "_"), _DESCRIPTIONS[name], _LABELS[name])
    for name in _DESCRIPTIONS
}
