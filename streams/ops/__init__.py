"""Operations: consumer-group lag, Burrow-style status, the /ops dashboard and /metrics."""
