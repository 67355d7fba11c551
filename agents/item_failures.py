"""One item of a per-item loop failed on its own: count it, log it once, let the loop go on.

Loops that handle many items in turn (a facility's forecast, its model choice, its idle tick)
must not stop at one item's exception, and must not log the same failure every cycle either:
a facility with a broken history would write a traceback every 5 s. ``ItemFailures`` counts
every failure in ``sems_item_failures_total{loop}`` (the SemsItemsFailing alert) and logs it
when the item's reason changes, or again after ``relog_s`` while it persists, with the trace id
of the attempt (the caller's log context). A success after failures is logged once.

An item that has not failed for ``forget_s`` is forgotten: a deleted facility, a BMS command
given up or a failed DR event never succeed, and their entries would otherwise pile up over a
long life. Items failing at least once per ``forget_s`` (every retry of every loop here) are
handled exactly as before; a forgotten one that fails again is logged as a new failure, and one
that succeeds after so long is not announced as working again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.metrics import Metrics

RELOG_S = 600.0
FORGET_S = 86_400.0
"""A day: longer than any loop's retry (the slowest, a model choice, is hourly)."""


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
    forget_s: float = FORGET_S
    clock_s: Callable[[], float] = time.monotonic
    _logged: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    """item -> (reason last logged, when it was logged, when the item last failed), clock_s;
    in the order of the last failures, oldest first, so forgetting stops at the first kept."""

    def __post_init__(self) -> None:
        if self.forget_s < self.relog_s:
            raise ValueError("forget_s must be >= relog_s: an item forgotten sooner would be "
                             "logged at every failure")

    def failed(self, item: str, exc: BaseException, *, what: str) -> bool:
        """Count one failure of ``item``; log it if its reason is new or ``relog_s`` passed.
        Returns whether it was logged. ``what`` says what was skipped ("forecast skipped")."""
        self.metrics.item_failures.labels(self.loop).inc()
        reason = reason_of(exc)
        now_s = self.clock_s()
        self._forget(before_s=now_s - self.forget_s)
        last = self._logged.pop(item, None)  # re-inserted last: the newest failure
        if last is not None and last[0] == reason and now_s - last[1] < self.relog_s:
            self._logged[item] = (last[0], last[1], now_s)
            return False
        self._logged[item] = (reason, now_s, now_s)
        self.logger.warning("%s %s: %s (%s fails on its own; the others go on)", what, item,
                            reason, self.loop, exc_info=last is None or last[0] != reason)
        return True

    def succeeded(self, item: str) -> None:
        """The item works again: say so once, and log its next failure at once."""
        if self._logged.pop(item, None) is not None:
            self.logger.info("%s %s works again", self.loop, item)

    def failing(self) -> set[str]:
        """Items whose latest attempt failed, within ``forget_s`` (for tests and status
        pages)."""
        self._forget(before_s=self.clock_s() - self.forget_s)
        return set(self._logged)

    def _forget(self, *, before_s: float) -> None:
        """Drop the items whose last failure is older than ``before_s``."""
        while self._logged:
            item, (_reason, _logged_s, failed_s) = next(iter(self._logged.items()))
            if failed_s >= before_s:
                return
            del self._logged[item]
