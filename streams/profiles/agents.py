"""The profile stage's Faust agent: the four event topics, folded into profiles by the
stage runner (``streams.pipeline``) with ``ProfileStage`` as its plug-in."""

from __future__ import annotations

import faust

from streams.pipeline.runner import register_stage
from streams.pipeline.stage import StageSpec
from streams.profiles.stage import copies_key, make_profile_stage
from streams.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    """Declare the event topics and ``fold_events_into_profiles`` on ``app``."""
    register_stage(app, settings, StageSpec(
        name="fold_events_into_profiles", label="profiles", topics=tuple(settings.event_topics),
        factory=make_profile_stage, processes=settings.fold_processes,
        order_key=copies_key))
