"""Benchmarks of the proxy's own cost: ``python -m bench.run`` (see bench/README.md).

Not timed tests: nothing here asserts speed. ``python -m bench.run --smoke`` runs
every phase for a fraction of a second so CI can keep the benchmark working.
"""
