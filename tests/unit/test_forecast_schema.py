"""The ``LoadForecast`` record: the columns of ``load_forecasts``, nested bands, order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest
from pydantic import ValidationError

from agents.forecasting import forecast
from agents.forecasting.record import to_record
from schemas.forecast import LoadForecast

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def point(minutes: int, **overrides: float) -> dict[str, Any]:
    p: dict[str, Any] = {"timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
                         "predicted_load_kw": 100.0, "confidence_lower": 90.0,
                         "confidence_upper": 110.0, "lower_95": 80.0, "upper_95": 120.0}
    return {**p, **overrides}


def record(points: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return {"facility_id": "plant-1", "made_at": T0.isoformat(), "model": "fourier_ols",
            "weather_used": True, "step_s": 900, "points": points, **overrides}


def test_a_forecast_validates() -> None:
    rec = LoadForecast.model_validate(record([point(0), point(15)]))
    assert rec.points[1].timestamp == T0 + timedelta(minutes=15)


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        (record([point(0, confidence_lower=79.0)]), "nest"),  # 80 % band wider than 95 %
        (record([point(15), point(0)]), "increasing"),  # out of order
        (record([point(0)], extra_field=1), "extra"),  # extra="forbid"
        (record([point(0)], step_s=0), "step_s"),
        (record([]), "points"),
    ],
)
def test_bad_records_are_refused(doc: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        LoadForecast.model_validate(doc)


def test_the_domain_forecast_maps_onto_the_record() -> None:
    index = pd.date_range("2026-11-01T00:00Z", periods=96 * 3, freq="15min")
    history = pd.Series(50.0 + np.arange(len(index)) % 96, index=index)
    fc = forecast(history, now=index[-1] + timedelta(minutes=15), timezone="UTC",
                  model="daily_profile")
    rec = to_record(fc, facility_id="plant-1")
    assert (rec.model, rec.step_s, len(rec.points)) == ("daily_profile", 900, 96)
    first = fc.points[0]
    assert rec.points[0].confidence_lower == first.lower_80_kw
    assert rec.points[0].upper_95 == first.upper_95_kw
