"""The simulated building management system: ``service`` (its behaviour, no I/O), ``soap`` (the
SOAP 1.1 envelopes of ``bms.wsdl``), ``server`` (served on aiohttp, in-process or
``python -m simulators.bms``), ``local`` (the BMS port straight onto the service, no SOAP)."""
