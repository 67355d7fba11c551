"""Topic contracts: the records that flow between SEMS agents and out to data engineers.

Every model here is exported as JSON Schema into ``schemas/json/`` (``python -m schemas.export``);
a test fails when the committed files drift from the models.
"""

from schemas.deadletter import DeadLetter, RejectReason
from schemas.metadata import Facility, Meter, MeterType, Registry
from schemas.reading import SensorReading
from schemas.rollup import Rollup, Scope, WindowName

__all__ = [
    "DeadLetter",
    "Facility",
    "Meter",
    "MeterType",
    "Registry",
    "RejectReason",
    "Rollup",
    "Scope",
    "SensorReading",
    "WindowName",
]
