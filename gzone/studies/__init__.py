"""The experiments as library calls: one module per experiment, each `flags -> options -> run`'s run.

A study builds its units from the core modules (measure, train, seeds, ...), runs them through the
run engine (`gzone.runs.engine`) into a store (memory or a run folder) and returns a `Result`.
The public entry points are re-exported by `gzone` (``gzone.radius_scan``, ...).
"""
