"""A policy simulator in virtual time: the real ``decide()`` and ``place()``, no broker.

``acs``, ``sharding`` and a fixed keep-alive baseline run the same scenario — a
workload file, a trace in the Azure Functions 2019 layout, or the built-in synthetic
sample — on a simulated clock, so hours of traffic take seconds to minutes. See
docs/simulator.md; :func:`~broker_sched.simulator.run.simulate` is the entry point
for code and tests.
"""
