"""The committed JSON Schemas are the models' schemas, valid Draft 2020-12, and they accept and
refuse the same payloads as the pydantic models; the examples in docs/topics.md conform."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from schemas.export import CONTRACTS, JSON_DIR, rendered
from schemas.reading import SensorReading

pytestmark = pytest.mark.unit

TOPICS_DOC = Path(__file__).parents[2] / "docs" / "topics.md"
STALE = "schemas/json is out of date: run `make schemas` and commit the result"


def committed_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads((JSON_DIR / f"{name}.schema.json").read_bytes())
    return schema


def test_committed_files_are_the_rendered_schemas() -> None:
    expected = rendered()
    committed = {p.name: p.read_bytes() for p in JSON_DIR.glob("*.schema.json")}
    assert sorted(committed) == sorted(expected), STALE
    for filename, content in expected.items():
        assert committed[filename] == content, f"{filename}: {STALE}"


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_committed_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = committed_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


VALID_READING: dict[str, Any] = {
    "facility_id": "plant-1",
    "meter_id": "plant-1-main-a",
    "meter_type": "main",
    "timestamp": "2026-03-02T09:30:15Z",
    "active_power_kw": 212.4,
    "reactive_power_kvar": 35.1,
    "voltage_v": 400.2,
    "frequency_hz": 50.01,
}


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in VALID_READING.items() if k != field}


@pytest.mark.parametrize(
    ("reading", "valid"),
    [
        pytest.param(VALID_READING, True, id="valid"),
        pytest.param({**VALID_READING, "active_power_kw": 212}, True, id="integer-for-number"),
        pytest.param({**VALID_READING, "timestamp": "2026-03-02T11:30:15+02:00"}, True,
                     id="offset-timestamp"),
        pytest.param({**VALID_READING, "active_power_kw": -100_000.0}, True,
                     id="power-at-lower-bound"),
        pytest.param({**VALID_READING, "colour": "red"}, False, id="extra-field"),
        pytest.param(without("voltage_v"), False, id="missing-field"),
        pytest.param(without("timestamp"), False, id="missing-timestamp"),
        pytest.param({**VALID_READING, "active_power_kw": "12.5"}, False, id="number-as-string"),
        pytest.param({**VALID_READING, "active_power_kw": True}, False, id="bool-for-number"),
        pytest.param({**VALID_READING, "voltage_v": None}, False, id="null-for-number"),
        pytest.param({**VALID_READING, "frequency_hz": 0.5}, False, id="frequency-out-of-range"),
        pytest.param({**VALID_READING, "voltage_v": -1}, False, id="negative-voltage"),
        pytest.param({**VALID_READING, "active_power_kw": 1e6}, False, id="power-out-of-range"),
        pytest.param({**VALID_READING, "meter_id": "bad id!"}, False, id="invalid-id"),
        pytest.param({**VALID_READING, "meter_id": "a" * 65}, False, id="id-65-chars"),
        pytest.param({**VALID_READING, "meter_type": "solar"}, False, id="unknown-meter-type"),
    ],
)
def test_reading_schema_agrees_with_the_model(reading: dict[str, Any], valid: bool) -> None:
    validator = Draft202012Validator(committed_schema("sensor-reading"))
    errors = list(validator.iter_errors(reading))
    assert (not errors) is valid, [e.message for e in errors]
    try:
        SensorReading.model_validate_json(orjson.dumps(reading))
        model_valid = True
    except ValidationError:
        model_valid = False
    assert model_valid is valid


def doc_examples() -> list[tuple[str, str]]:
    """``(contract, json)`` of every block marked ``<!-- example: contract -->``."""
    text = TOPICS_DOC.read_text(encoding="utf-8")
    return re.findall(r"<!-- example: ([a-z-]+) -->\s*```json\n(.*?)```", text, flags=re.S)


def test_topics_doc_has_examples_of_each_stream() -> None:
    assert {name for name, _ in doc_examples()} == {"sensor-reading", "dead-letter", "rollup"}


@pytest.mark.parametrize(("name", "example"), doc_examples())
def test_topics_doc_examples_conform(name: str, example: str) -> None:
    document = orjson.loads(example)
    Draft202012Validator(committed_schema(name)).validate(document)
    model: type[BaseModel] = CONTRACTS[name]
    parsed = model.model_validate_json(example)
    # What SEMS would write for this record is what the page shows.
    assert parsed.model_dump(mode="json") == document
