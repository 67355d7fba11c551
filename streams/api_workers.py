"""``sems api --workers N``: N API processes on one port, so that the API's ceiling grows with
the cores (one process is one event loop: one core at most).

This process only supervises: it starts N ``sems api`` processes, each binding the same
address with SO_REUSEPORT (the kernel spreads new connections over them), and stops them all
on SIGTERM or SIGINT within ``SEMS_SHUTDOWN_GRACE_S`` (+1 s, then SIGKILL). When one of them
exits on its own, the others are stopped and the group exits with that status (70 when it
was 0 or a signal), for its supervisor (systemd, Kubernetes) to restart: a group never runs
on short of a process. Each process has its own rate limits, ``/metrics`` and verified-token
cache; the ``/current`` cache is shared through Redis in production (in-process, so per
process, in the embedded profile)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from streams.settings import Settings
from streams.shutdown import EXIT_FAILED


def worker_argv(settings: Settings) -> list[str]:
    """One process of the group: the same settings (the environment is inherited; what the
    command line set is passed again), one worker, SO_REUSEPORT."""
    return [sys.executable, "-m", "streams.cli", "api", "--workers", "1", "--reuse-port",
            "--profile", settings.profile, "--data-dir", str(settings.data_dir),
            "--host", settings.api_host, "--port", str(settings.api_port)]


async def run_group(settings: Settings) -> int:
    if settings.api_port == 0:
        print("sems: --workers > 1 needs a fixed port (SEMS_API_PORT / --port)",
              file=sys.stderr)
        return 2
    if not settings.auth_jwks_url:  # make the local issuer's key once, before N race for it
        from streams.security import local_issuer

        local_issuer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Sessions of their own: a terminal's Ctrl+C reaches this process only, which stops
    # each of them once (a second signal would make them exit at once).
    procs = [await asyncio.create_subprocess_exec(*worker_argv(settings),
                                                  stdin=asyncio.subprocess.DEVNULL,
                                                  start_new_session=True)
             for _ in range(settings.api_workers)]
    print(f"SEMS API: {len(procs)} processes on http://{settings.api_host}:"
          f"{settings.api_port} (pids {', '.join(str(p.pid) for p in procs)}). "
          "Press Ctrl+C to stop.", flush=True)
    exits = [asyncio.ensure_future(p.wait()) for p in procs]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([*exits, stopping], return_when=asyncio.FIRST_COMPLETED)
    first_exit = next((p.returncode for p in procs if p.returncode is not None), None)
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    _, late = await asyncio.wait(exits, timeout=settings.shutdown_grace_s + 1)
    for p in procs:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    if late:
        await asyncio.wait(late)
    stopping.cancel()
    if not stop.is_set():  # a process ended by itself: the group cannot go on short of it
        print(f"sems: an API process exited with status {first_exit}; stopped the group",
              file=sys.stderr, flush=True)
        return first_exit if first_exit is not None and first_exit > 0 else EXIT_FAILED
    return 0 if all(p.returncode == 0 for p in procs) else 1
