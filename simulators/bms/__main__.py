"""``python -m simulators.bms --port 8085``: the simulated BMS, standalone."""

from simulators.bms.server import main

main()
