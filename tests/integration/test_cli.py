"""`sems facilities import`: register a site's facilities and meters from a JSON file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from streams.cli import main

pytestmark = pytest.mark.integration

SITE = {
    "facilities": [{"facility_id": "plant-1", "name": "Plant 1", "timezone": "Europe/Berlin",
                    "contract_demand_kw": 1200}],
    "meters": [
        {"meter_id": "plant-1-main", "facility_id": "plant-1", "meter_type": "main"},
        {"meter_id": "plant-1-chiller", "facility_id": "plant-1", "meter_type": "hvac",
         "sample_interval_s": 60},
    ],
}


def test_import_registers_facilities_and_meters(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.json"
    site.write_bytes(orjson.dumps(SITE))
    assert main(["facilities", "import", str(site), "--data-dir", str(tmp_path)]) == 0
    assert "imported 1 facilities and 2 meters" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "sems.db") as conn:
        meters = conn.execute("SELECT meter_id, meter_type, sample_interval_s FROM meters "
                              "ORDER BY meter_id").fetchall()
    assert meters == [("plant-1-chiller", "hvac", 60.0), ("plant-1-main", "main", 15.0)]


@pytest.mark.parametrize(("doc", "complaint"), [
    ({"facilities": [{"facility_id": "bad id", "name": "x", "contract_demand_kw": 1}]},
     "facility_id"),
    ({"meters": [{"meter_id": "m", "facility_id": "nowhere", "meter_type": "main"}]},
     "unknown facility nowhere"),
])
def test_bad_import_is_refused_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             doc: dict[str, object], complaint: str) -> None:
    site = tmp_path / "site.json"
    site.write_bytes(orjson.dumps(doc))
    assert main(["facilities", "import", str(site), "--data-dir", str(tmp_path)]) == 2
    assert complaint in capsys.readouterr().err
