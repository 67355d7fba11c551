"""A stop is bounded even when the event loop cannot bound it: a stop step that holds the
loop, or executor threads that the interpreter's exit would wait for."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from streams.shutdown import EXIT_ABANDONED, HARD_EXIT_SLACK_S

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 1.0
SLACK_S = 3.0
"""Interpreter start and exit on a busy 2-core machine."""

PROGRAM = textwrap.dedent("""
    import asyncio, os, signal, sys, time
    from streams.shutdown import Shutdown

    async def main(case):
        shutdown = Shutdown(grace_s={grace_s})
        shutdown.install()
        loop = asyncio.get_running_loop()

        async def holds_the_loop():
            time.sleep(120)  # a blocking call in a coroutine: no timeout of the loop fires

        if case == "loop":
            shutdown.on_stop("holds the loop", holds_the_loop)
        else:  # a thread stuck in a call: asyncio.run's exit would wait for it
            loop.run_in_executor(None, time.sleep, 120)
        print("ready", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        await shutdown.requested.wait()
        return len(await shutdown.stop())

    sys.exit(asyncio.run(main(sys.argv[1])))
""").format(grace_s=GRACE_S)


@pytest.mark.parametrize("case", ["loop", "thread"])
def test_a_stop_ends_by_the_grace_whatever_holds_it(case: str) -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PROGRAM, case], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    took_s = time.monotonic() - started
    assert done.stdout.startswith("ready"), done.stderr
    assert done.returncode == EXIT_ABANDONED, done.stderr
    assert "did not end within the grace" in done.stderr
    assert took_s < GRACE_S + HARD_EXIT_SLACK_S + SLACK_S, f"{took_s:.1f} s"
