"""One item of a per-item loop failed on its own: count it, log it once, let the loop go on.

Loops that handle many items in turn (a facility's forecast, its model choice, its idle tick)
must not stop at one item's exception, and must not log the same failure every cycle either:
a facility with a broken history would write a traceback every 5 s. ``ItemFailures`` counts
every failure in ``sems_item_failures_total{loop}`` (the SemsItemsFailing alert) and logs it
when the item's reason changes, or again after ``relog_s`` while it persists, with the trace id
of the attempt (the caller's log context). A success after failures is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.metrics import Metrics

RELOG_S = 600.0


def reason_of(exc: BaseException) -> str:
    """A short, stable reason: the exception's type and message (no traceback)."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class ItemFailures:
    loop: str
    """The ``loop`` label: forecast, forecast_choice, rollup_idle."""
    metrics: Metrics
    logger: logging.Logger
    relog_s: float = RELOG_S
    clock_s: Callable[[], float] = time.monotonic
    _logged: dict[str, tuple[str, float]] = field(default_factory=dict)
    """item -> (reason last logged, when, clock_s)."""

    def failed(self, item: str, exc: BaseException, *, what: str) -> bool:
        """Count one failure of ``item``; log it if its reason is new or ``relog_s`` passed.
        Returns whether it was logged. ``what`` says what was skipped ("forecast skipped")."""
        self.metrics.item_failures.labels(self.loop).inc()
        reason = reason_of(exc)
        now_s = self.clock_s()
        last = self._logged.get(item)
        if last is not None and last[0] == reason and now_s - last[1] < self.relog_s:
            return False
        self._logged[item] = (reason, now_s)
        self.logger.warning("%s %s: %s (%s fails on its own; the others go on)", what, item,
                            reason, self.loop, exc_info=last is None or last[0] != reason)
        return True

    def succeeded(self, item: str) -> None:
        """The item works again: say so once, and log its next failure at once."""
        if self._logged.pop(item, None) is not None:
            self.logger.info("%s %s works again", self.loop, item)

    def failing(self) -> set[str]:
        """Items whose latest attempt failed (for tests and status pages)."""
        return set(self._logged)
