"""Reproducible benchmarks of the adapter and their recorded results (DESIGN.md §3, issue #3 §10).

``python -m benchmarks.statewide`` runs one end-to-end benchmark (synthesise, ingest, evaluate,
write reports) and appends a JSON line to ``benchmarks/results.jsonl``; ``benchmarks.table``
renders those lines as the Markdown table in ``benchmarks/README.md``; ``benchmarks.profile``
writes the cProfile and SQL-statement profiles under ``benchmarks/profiles/``.
"""
