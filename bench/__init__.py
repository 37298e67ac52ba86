"""Benchmarks and load/fault scenarios for opsdash: `python -m bench <scenario>`.

They measure, they do not assert timings (tests assert what is exact). Each scenario runs in a
throwaway environment (bench.environment): its own database, its own Redis key prefix, caching on,
the switch refreshed in the background as in a served process. Results are in bench/RESULTS.md.
"""
