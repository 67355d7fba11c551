"""State: event-time windowing for rollups, independent of any stream runtime."""
