"""Runtimes, wiring, settings and the command line."""
