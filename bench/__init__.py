"""Benchmarks of the proxy's own cost: ``python -m bench.run``, and ``python -m bench.ab REV_A REV_B``
to compare two revisions in paired rounds (see bench/README.md).

Not timed tests: nothing here asserts speed. ``python -m bench.run --smoke`` runs
every phase for a fraction of a second so CI can keep the benchmark working.
"""
