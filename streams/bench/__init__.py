"""Benchmarks run by `streams bench`, each against a baseline in the same run."""
