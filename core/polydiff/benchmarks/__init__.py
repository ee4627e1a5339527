"""Benchmarks behind ``polydiff bench``: reproducible measurements against exact targets and
reference libraries. Each module exposes ``main(argv) -> int`` and a programmatic ``run(...)``."""
