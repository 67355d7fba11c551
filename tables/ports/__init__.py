"""Ports by area: what the agents and the API ask of the outside world, as protocols; adapters
live in ``connectors/`` (and the simulated BMS in ``simulators/``). Import from the area's
module: ``tables.ports.timeseries``, ``metadata``, ``access``, ``forecasts``, ``dr``,
``cache``, ``weather``, ``bms``; ``tables.ports.store`` is the whole store a profile opens."""
