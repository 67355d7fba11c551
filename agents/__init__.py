"""Thin agents: iterate a stream, call pure domain logic, hand results to the next stream or a
sink. The same functions run on the local runtime and (later) on faust-streaming workers."""
