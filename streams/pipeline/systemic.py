"""The systemic stop (arroyo's DLQ ratio limit): when nearly every recent record fails
validation, stop the stage instead of dead-lettering everything."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from streams.events.validate import clip


@dataclass(frozen=True)
class DlqLimit:
    """When dead-lettering stops being the answer: a share of invalid events at or above
    ``max_invalid_ratio`` among the last ``window`` events, once ``min_events`` were seen."""

    max_invalid_ratio: float = 0.95
    window: int = 1000
    min_events: int = 200


class SystemicFailure(RuntimeError):
    """Nearly every event fails: a bad deploy or a producer writing the wrong format.

    Raised instead of dead-lettering the batch; the worker should stop without committing.
    """


class SystemicFailureDetector:
    """Tracks validation outcomes over a sliding window of recent events (no I/O)."""

    def __init__(self, limit: DlqLimit = DlqLimit()):
        self.limit = limit
        self._window: deque[bool] = deque(maxlen=max(limit.window, 1))
        self._invalid = 0

    @property
    def invalid_ratio(self) -> float:
        """The share of invalid events in the current window (0 when empty)."""
        return self._invalid / len(self._window) if self._window else 0.0

    def observe(self, valid: int, invalid_reasons: Sequence[str]) -> None:
        """Add one batch's outcomes; raise SystemicFailure when the window trips the limit.

        Call it before dead-lettering the batch, so that a tripped limit dead-letters
        nothing of it.
        """
        outcomes = [True] * valid + [False] * len(invalid_reasons)
        for ok in outcomes:
            if len(self._window) == self._window.maxlen and not self._window[0]:
                self._invalid -= 1
            self._window.append(ok)
            if not ok:
                self._invalid += 1
        seen = len(self._window)
        if seen < self.limit.min_events or not invalid_reasons:
            return
        ratio = self._invalid / seen
        if ratio >= self.limit.max_invalid_ratio:
            common = Counter(r.split(":", 1)[0] if r.startswith("/") else r
                             for r in invalid_reasons).most_common(3)
            reasons = "; ".join(f"{clip(r, 120)} (x{n})" for r, n in common)
            raise SystemicFailure(
                f"stopping: {self._invalid} of the last {seen} events ({ratio:.0%}) failed "
                f"validation, at or above the limit of {self.limit.max_invalid_ratio:.0%} "
                "(STREAMS_DLQ_MAX_INVALID_RATIO). That looks like a bad deploy or a producer "
                "writing the wrong format, not a few bad events, so this batch was neither "
                f"dead-lettered nor committed. Most common reasons: {reasons}"
            )
