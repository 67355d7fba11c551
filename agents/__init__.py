"""Agents and the services they call, over pure domain logic.

Modules here are the thin agents and services (``async for batch in stream``; I/O only through
the ports of ``tables/ports/``): ingest, rollups, dead letters, forecasts, demand response. The
subpackages are the pure logic they call, with no I/O at all: ``forecasting/`` (models,
intervals, backtests) and ``dr/`` (baselines, inventory, the planner, performance). Both
runtimes run the same agents (``streams/compose.py`` registers them)."""
