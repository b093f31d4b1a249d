"""Unified profiles: folding events into PostgreSQL."""
