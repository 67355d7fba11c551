"""The forecast over an event: baseline and upper band, folded by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.dr.forecasts import Band, event_forecast
from agents.dr.series import BaselineInputError, InsufficientHistoryError
from schemas.forecast import LoadForecast, LoadForecastPoint

pytestmark = pytest.mark.unit

T0 = datetime(2026, 7, 15, 21, tzinfo=UTC)


def forecast(count: int = 8) -> LoadForecast:
    # Quarter i: predicted 400 + 10 i, 80 % band +-20, 95 % band +-40.
    points = [
        LoadForecastPoint(timestamp=T0 + timedelta(minutes=15 * i), predicted_load_kw=400 + 10 * i,
                          confidence_lower=380 + 10 * i, confidence_upper=420 + 10 * i,
                          lower_95=360 + 10 * i, upper_95=440 + 10 * i)
        for i in range(count)
    ]
    return LoadForecast(facility_id="fac-001", made_at=T0 - timedelta(hours=3),
                        model="fourier_ols", weather_used=True, step_s=900, points=points)


@pytest.mark.parametrize(
    ("interval_s", "band", "predicted", "upper"),
    [
        # Hourly: quarters 0-3 average 415, quarters 4-7 average 455; 95 % upper +40.
        (3600, "95", (415.0, 455.0), (455.0, 495.0)),
        # The 80 % band: +20.
        (3600, "80", (415.0, 455.0), (435.0, 475.0)),
        # The forecast's own 15-min grid: the points themselves.
        (None, "95", tuple(400.0 + 10 * i for i in range(8)),
         tuple(440.0 + 10 * i for i in range(8))),
    ],
)
def test_event_forecast(
    interval_s: int | None, band: Band, predicted: tuple[float, ...], upper: tuple[float, ...]
) -> None:
    got = event_forecast(forecast(), event_start=T0, event_end=T0 + timedelta(hours=2),
                         band=band, interval_s=interval_s)
    assert (got.predicted_kw, got.upper_kw) == (predicted, upper)
    baseline = got.as_baseline()
    assert (baseline.method, baseline.baseline_kw) == ("forecast", predicted)


def test_event_forecast_must_cover_the_event() -> None:
    # Seven quarters: the second hour misses its last quarter.
    with pytest.raises(InsufficientHistoryError):
        event_forecast(forecast(7), event_start=T0, event_end=T0 + timedelta(hours=2),
                       interval_s=3600)
    with pytest.raises(BaselineInputError):  # 15-min points do not fold into 10-min intervals
        event_forecast(forecast(), event_start=T0, event_end=T0 + timedelta(hours=2),
                       interval_s=600)
