"""Deterministic simulators that stand in for real facilities in tests and demos."""
