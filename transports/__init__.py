"""Broker backends behind :mod:`transports.base`, found by name (see :mod:`transports.registry`)."""
