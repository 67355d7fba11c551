"""Errors the forecasting domain raises on bad input; the agent logs and skips the facility."""


class ForecastInputError(ValueError):
    """The input cannot be forecast as given (no UTC index, unknown zone, bad horizon)."""


class InsufficientHistory(ForecastInputError):
    """Not even one observed value before ``now``: there is nothing to forecast from."""
