"""Benchmarks of the users loader against the bundled emulator (issue #4).

Run ``python -m benchmarks.run`` (``make bench``); ``--help`` lists the
options. Modules: ``_server`` (the emulator in its own process), ``_rivals``
(the other ways to get the same frame, and the floor), ``_memory`` (peak RSS
of one load in a fresh process), ``run`` (the schedule and the table).
"""
