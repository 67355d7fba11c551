"""BMS adapters: ``connectors.bms.soap.BmsClient`` (SOAP through zeep) and what observes its
commands. The port they implement is ``tables.ports.bms``."""
