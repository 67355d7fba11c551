"""What the demand-response routes need (``ApiDeps.dr``); the runtime builds it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agents.dr_baseline_source import BaselineSource
from agents.dr_intake import DrIntake, IntakeLimits
from core.metrics import Metrics
from schemas.dr import DrEvent
from tables.ports.access import AccessStore
from tables.ports.dr import DrStore
from tables.ports.metadata import MetadataStore


@dataclass(frozen=True)
class DrApi:
    """The reads (events, their commands, the utilities verifying the webhook) and the parts
    of the intake (``intake``, built once per app with the API's metadata and metrics)."""

    store: DrStore
    access: AccessStore
    baselines: BaselineSource
    submit: Callable[[DrEvent], Awaitable[None]]
    """Puts a new event on the ``dr-events`` stream, to the DR agent."""
    signature_tolerance_s: float = 300.0
    """The clock skew allowed: a signature's timestamp, and how long ago an event may have
    started."""
    max_lead_s: float = 7 * 86400.0
    """How far ahead an event may start (``settings.dr_max_lead_s``)."""

    def intake(self, *, metadata: MetadataStore, metrics: Metrics) -> DrIntake:
        return DrIntake(events=self.store, metadata=metadata, baselines=self.baselines,
                        submit=self.submit, metrics=metrics,
                        limits=IntakeLimits(max_lead_s=self.max_lead_s,
                                            clock_tolerance_s=self.signature_tolerance_s))
