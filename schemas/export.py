"""Write the JSON Schema of every topic contract into ``schemas/json/``.

Run ``python -m schemas.export`` after changing a model; ``tests/unit/test_schema_export.py``
fails while the committed files differ from the models.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.deadletter import DeadLetter
from schemas.dr import BmsCommandRecord, DrEvent, DrNotification
from schemas.forecast import LoadForecast
from schemas.metadata import Facility, Meter
from schemas.reading import SensorReading
from schemas.rollup import Rollup

JSON_DIR = Path(__file__).parent / "json"

CONTRACTS: dict[str, type[BaseModel]] = {
    "sensor-reading": SensorReading,
    "rollup": Rollup,
    "dead-letter": DeadLetter,
    "load-forecast": LoadForecast,
    "dr-event": DrEvent,
    "bms-command": BmsCommandRecord,
    "dr-notification": DrNotification,
    "facility": Facility,
    "meter": Meter,
}


def render(model: type[BaseModel]) -> bytes:
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **model.model_json_schema(mode="serialization"),
    }
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def rendered() -> dict[str, bytes]:
    return {f"{name}.schema.json": render(model) for name, model in CONTRACTS.items()}


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for filename, content in rendered().items():
        (JSON_DIR / filename).write_bytes(content)
        print(f"wrote {JSON_DIR / filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
