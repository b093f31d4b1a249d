"""The topic <-> kind map of the event topics, built once from the settings."""

from __future__ import annotations

from collections.abc import Mapping

from streams.events.models import KINDS, Kind
from streams.settings import Settings


class TopicKinds:
    """Maps (prefixed) event topic names to their kind (click, view, social, identify)."""

    def __init__(self, topics: Mapping[str, Kind] | None = None):
        self._topics = dict(topics or {})

    @classmethod
    def from_names(cls, click: str, view: str, social: str, identify: str) -> TopicKinds:
        """From the full topic names (``settings.kafka.click`` and its siblings)."""
        return cls({click: "click", view: "view", social: "social", identify: "identify"})

    def kind(self, topic: str) -> Kind | None:
        """The kind of ``topic``; without a mapping, by its default suffix (events.click...)."""
        if self._topics:
            return self._topics.get(topic)
        for kind in KINDS:
            if topic == f"events.{kind}" or topic.endswith(f".events.{kind}"):
                return kind  # type: ignore[return-value]
        return None

    def topic(self, kind: Kind) -> str | None:
        """The topic name of ``kind`` (None without a mapping)."""
        for topic, k in self._topics.items():
            if k == kind:
                return topic
        return None

    @classmethod
    def for_settings(cls, settings: Settings) -> TopicKinds:
        """The configured (prefixed) event topic names mapped to their kinds."""
        kafka = settings.kafka
        return cls.from_names(kafka.click, kafka.view, kafka.social, kafka.identify)


def topic_for(settings: Settings, kind: Kind) -> str:
    """The full topic name for an event kind."""
    return settings.kafka.event_topic(kind)
