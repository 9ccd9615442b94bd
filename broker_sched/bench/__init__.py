"""Benchmarks: workloads, load drivers, latency histograms, scenarios and reports.

A scenario drives either the whole scheduler (a :class:`~broker_sched.stack.Stack` on a
chosen transport and policy) or a transport alone, records every completion's latency in
HDR histograms and per-interval series, puts the scheduler's and the broker's events on
the same clock, and writes JSON, a Markdown table and PNG plots (``broker-sched bench``
and ``broker-sched compare``). See ``docs/experiments.md`` for what each scenario shows.
"""
