"""Every benchmark, one after another, then one table of the ratios against their baselines
and targets (issue 15).

Each benchmark runs as a subprocess of its own (a fresh interpreter and heap, as its make
target runs it), with its JSON output into the run folder and its stdout and stderr into
``<name>.log`` there; one progress line on stderr. Then ``bench/all_summary.py`` turns the
JSON files into the table, printed and written as ``summary.md`` and ``summary.json``
beside them. A benchmark that fails (exits non-zero, or writes no results) is a row of the
table with its log, and the others still run. The exit status is 1 when a benchmark failed
or a judged target was not met. Method and results: docs/performance.md.

    python -m bench.all [--quick] [--only NAME ...] [--skip NAME ...] [--args NAME=ARGS]
                        [--out-dir PATH] [--timeout-s 7200]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from bench.all_summary import Outcome, markdown, summarize
from tests.servers import spawn, stop_process

REPO = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 60.0
"""After a timeout: SIGINT lets the benchmark stop its servers; SIGKILL after this long."""


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    module: str
    json_option: str
    args: tuple[str, ...]
    """What its make target runs."""
    quick: tuple[str, ...]
    """``--quick``: the smallest sizes that still give every ratio of the table."""


BENCHES = (
    Bench("ingest", "bench.ingest", "--json", (), ("--readings", "20000", "--repeat", "1")),
    Bench("kafka", "bench.kafka", "--json", (),
          ("--readings", "20000", "--repeat", "1", "--workers", "1")),
    Bench("influx", "bench.influx", "--json", (), ("--readings", "20000", "--repeat", "1")),
    Bench("api", "bench.api", "--json", (),
          ("--repeat", "1", "--duration-s", "5", "--wrk-s", "3")),
    Bench("forecast", "bench.forecast", "--json", ("--facilities", "100", "1000", "--repeat", "3"),
          ("--facilities", "100", "--repeat", "1", "--choose", "0")),
    Bench("startup", "bench.startup", "--out", ("--runs", "3"),
          ("--runs", "1", "--backfill-s", "21600", "--baseline-s", "5")),
    Bench("dr-stall", "bench.dr_stall", "--json", ("--runs", "3"),
          ("--runs", "1", "--baseline-s", "1", "--reports", "5")),
)
NAMES = tuple(b.name for b in BENCHES)


@dataclass(frozen=True, slots=True)
class Options:
    benches: tuple[Bench, ...]
    quick: bool
    extra: dict[str, tuple[str, ...]]
    out_dir: Path | None
    timeout_s: float
    lock: Path | None = None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME",
                   help=f"run these only ({', '.join(NAMES)})")
    p.add_argument("--skip", nargs="+", choices=NAMES, metavar="NAME", default=[],
                   help="run all but these")
    p.add_argument("--quick", action="store_true",
                   help="smoke sizes (ingest --readings 20000 --repeat 1, ...): minutes, "
                        "not for the record")
    p.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                   help="more options for one benchmark, after the others (the last of an "
                        "option wins), e.g. --args 'kafka=--workers 1,2'; repeatable")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="the run folder (.run/bench-all/<UTC time>-<commit>)")
    p.add_argument("--timeout-s", type=float, default=7200.0,
                   help="a benchmark still running after this long fails (7200)")
    p.add_argument("--lock", type=Path, default=None,
                   help="hold an exclusive flock(2) of this file while each benchmark runs, so "
                        "that other work sharing the machine (taking it shared) waits for it "
                        "and runs only between benchmarks")
    a = p.parse_args(argv)
    extra: dict[str, tuple[str, ...]] = {}
    for item in a.args:
        name, sep, args = item.partition("=")
        if not sep or name not in NAMES:
            p.error(f"--args takes NAME=ARGS with NAME one of {', '.join(NAMES)}: {item!r}")
        extra[name] = (*extra.get(name, ()), *shlex.split(args))
    chosen = tuple(b for b in BENCHES
                   if (a.only is None or b.name in a.only) and b.name not in a.skip)
    if not chosen:
        p.error("--only and --skip leave no benchmark to run")
    return Options(chosen, a.quick, extra, a.out_dir, a.timeout_s, a.lock)


def git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False,
                         timeout=30)
    return out.stdout.strip() if out.returncode == 0 else ""


def commit() -> str:
    """``git rev-parse --short HEAD``, ``+dirty`` when a tracked file differs from it (as
    ``git describe --dirty`` counts it: untracked files do not)."""
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def last_line(log: Path) -> str:
    """The last line a benchmark wrote, for the progress line."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [x.strip() for x in tail.replace("\r", "\n").splitlines() if x.strip()]
    return lines[-1] if lines else ""


class Progress:
    """The progress line on stderr: on a terminal rewritten in place every second (elapsed
    time and the benchmark's last line); elsewhere only its start and its end, a line each."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def update(self, text: str) -> None:
        if self.live:
            width = max(20, os.get_terminal_size(self.stream.fileno()).columns - 1)
            self.stream.write("\r" + text[:width] + "\x1b[K")
            self.stream.flush()

    def line(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.live else "") + text + "\n")
        self.stream.flush()


def run_one(bench: Bench, opts: Options, folder: Path, *, position: str,
            progress: Progress) -> Outcome:
    json_path = folder / f"{bench.name}.json"
    log_path = folder / f"{bench.name}.log"
    argv = [sys.executable, "-m", bench.module, *(bench.quick if opts.quick else bench.args),
            *opts.extra.get(bench.name, ()), bench.json_option, str(json_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with contextlib.ExitStack() as held:
        if opts.lock is not None:
            lock = held.enter_context(opts.lock.open("a"))
            progress.line(f"{position} {bench.name}: waiting for {opts.lock}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _run_locked(bench, opts, argv, json_path, log_path, env, position=position,
                           progress=progress)


def _run_locked(bench: Bench, opts: Options, argv: list[str], json_path: Path, log_path: Path,
                env: dict[str, str], *, position: str, progress: Progress) -> Outcome:
    started = time.monotonic()
    note = ""
    progress.line(f"{position} {bench.name}: {shlex.join(argv[2:])} (log {log_path})")
    with log_path.open("wb") as log:
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        process = spawn(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                        stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                elapsed_s = time.monotonic() - started
                if elapsed_s > opts.timeout_s:
                    note = f"stopped after {opts.timeout_s:g} s (--timeout-s)"
                    break
                progress.update(f"{position} {bench.name} {elapsed_s:.0f} s: "
                                f"{last_line(log_path)}")
                try:
                    process.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            stop_process(process, timeout_s=STOP_GRACE_S, sig=signal.SIGINT)
    elapsed_s = time.monotonic() - started
    returncode = process.returncode
    progress.line(f"{position} {bench.name}: exit {returncode} in {elapsed_s:.0f} s"
                  + (f", {note}" if note else ""))
    return Outcome(bench.name, returncode, json_path, log_path, round(elapsed_s, 1), note)


def run_folder(opts: Options, *, now: datetime, sha: str) -> Path:
    """The run folder, relative to the checkout when inside it (the table names it)."""
    folder = (opts.out_dir.resolve() if opts.out_dir is not None else
              REPO / ".run" / "bench-all" / f"{now:%Y%m%dT%H%M%SZ}-{sha.replace('+', '-')}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    now = datetime.now(UTC)
    sha = commit()
    folder = run_folder(opts, now=now, sha=sha)
    os.chdir(REPO)  # where the benchmarks run, and what the folder is relative to
    progress = Progress(sys.stderr)
    outcomes = [run_one(b, opts, folder, position=f"[{i}/{len(opts.benches)}]",
                        progress=progress)
                for i, b in enumerate(opts.benches, start=1)]
    summary = summarize(outcomes, commit=sha, date=f"{now:%Y-%m-%d %H:%M} UTC",
                        folder=folder, quick=opts.quick)
    table = markdown(summary)
    (folder / "summary.md").write_text(table)
    (folder / "summary.json").write_bytes(summary.to_json())
    print(table, end="")
    return summary.exit_status()


if __name__ == "__main__":
    sys.exit(main())
