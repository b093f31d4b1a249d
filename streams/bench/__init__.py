"""Benchmarks run by ``streams bench``; each compares against a baseline in the same run."""
