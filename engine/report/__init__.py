"""Report: what a person reads about a loop, during and after it.

Owns `autoresearch status`, `autoresearch report` (progress.png, report.md, --json)
and the held-out test_bpb, which it gets by running `autoresearch evaluate` in a
subprocess. Never imports JAX; reads the ledger through `engine.loop.ledger`.
"""
