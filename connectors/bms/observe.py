"""What every BMS adapter does after a command: log a failure, then tell the observers."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tables.ports.bms import BmsCommand, CommandObserver, CommandResult

log = logging.getLogger("connectors.bms")


def report_command(command: BmsCommand, result: CommandResult, duration_s: float,
                   observers: Sequence[CommandObserver]) -> None:
    """Logs a failed command with what was asked, then calls each observer; an observer that
    raises is logged and skipped, so metrics or audit trouble never changes a result."""
    if not result.ok:
        log.warning("BMS command %s %s %s/%s=%s failed (%s%s): %s", command.command_id,
                    command.kind, command.facility_id, command.target_id, command.value,
                    result.failure, f" {result.fault_code}" if result.fault_code else "",
                    result.error)
    for observer in observers:
        try:
            observer(command, result, duration_s)
        except Exception:
            log.exception("BMS command observer %r failed", observer)
