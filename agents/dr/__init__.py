"""Demand response domain: customer baselines, the reduction planner, event performance.

Pure code, no I/O: the DR agent reads rollups, forecasts and events through the store ports
and hands them to these functions. See docs/demand-response.md.
"""
