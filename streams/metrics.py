"""A pipeline stage's metrics, shared by every stage (profiles now, triggers later), and
the worker's own /metrics endpoint. Metric names are kept here, in one place.

Names are dotted in the code and written with underscores for Prometheus (a counter
gains ``_total``). Every series is labelled by ``stage``; the other labels take short,
fixed codes, never free text such as a dead letter's reason, so that the number of series
stays bounded whatever the events carry.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Histogram, make_wsgi_app

from streams.settings import Settings

BATCH_EVENTS = "streams.stage.batch.events"
BATCH_WRITE_SECONDS = "streams.stage.batch.write.seconds"
BATCH_ACK_SECONDS = "streams.stage.batch.ack.seconds"
EVENTS = "streams.stage.events"
DEAD_LETTERS = "streams.stage.dead.letters"
RETRIES = "streams.stage.retries"

# The codes a label may take (see the module docstring for why they are fixed).
OUTCOMES = ("stored", "duplicate", "skipped", "dead_lettered")
DEAD_LETTER_REASONS = ("invalid", "data_fault", "failed")
RETRY_CLASSES = ("unavailable", "transient")

# Batch sizes run up to STREAMS_BATCH_SIZE (500 by default); seconds from a millisecond
# (a small batch of duplicates) to a minute (a database being waited out).
_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)


def prometheus_name(dotted: str) -> str:
    """The Prometheus name of a dotted metric name (before a counter's ``_total``)."""
    return dotted.replace(".", "_")


_batch_events = Histogram(prometheus_name(BATCH_EVENTS), "Events in a batch a stage wrote",
                          ["stage"], buckets=_SIZE_BUCKETS)
_batch_write = Histogram(prometheus_name(BATCH_WRITE_SECONDS),
                         "Seconds a stage took to store (fold) one batch", ["stage"],
                         buckets=_SECONDS_BUCKETS)
_batch_ack = Histogram(prometheus_name(BATCH_ACK_SECONDS),
                       "Seconds from a batch stored to its messages acknowledged", ["stage"],
                       buckets=_SECONDS_BUCKETS)
_events = Counter(prometheus_name(EVENTS), "Events a stage processed, by outcome",
                  ["stage", "outcome"])
_dead_letters = Counter(prometheus_name(DEAD_LETTERS),
                        "Events a stage dead-lettered, by reason class", ["stage", "reason"])
_retries = Counter(prometheus_name(RETRIES),
                   "Batch writes a stage retried, by failure class", ["stage", "class"])


def _check(value: str, allowed: Iterable[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")


def observe_batch(stage: str, size: int, write_seconds: float, ack_seconds: float) -> None:
    """Record one stored and acknowledged batch: its size, how long the write took and how
    long from stored to acknowledged. Never blocks; raises nothing."""
    _batch_events.labels(stage).observe(size)
    _batch_write.labels(stage).observe(write_seconds)
    _batch_ack.labels(stage).observe(ack_seconds)


def count_events(stage: str, outcome: str, n: int = 1) -> None:
    """Count ``n`` events of ``stage`` with ``outcome`` (one of :data:`OUTCOMES`).
    Raises ValueError for another outcome; never blocks."""
    _check(outcome, OUTCOMES, "outcome")
    if n:
        _events.labels(stage, outcome).inc(n)


def count_dead_letter(stage: str, reason_code: str, n: int = 1) -> None:
    """Count ``n`` dead letters of ``stage`` by reason class (one of
    :data:`DEAD_LETTER_REASONS`, never the free-text reason). Raises ValueError for
    another code; never blocks."""
    _check(reason_code, DEAD_LETTER_REASONS, "dead-letter reason")
    if n:
        _dead_letters.labels(stage, reason_code).inc(n)


def count_retry(stage: str, cls: str) -> None:
    """Count one retried batch write of ``stage`` by failure class (one of
    :data:`RETRY_CLASSES`). Raises ValueError for another class; never blocks."""
    _check(cls, RETRY_CLASSES, "retry class")
    _retries.labels(stage, cls).inc()


# --- the worker's /metrics -------------------------------------------------------------
class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds the worker's exit


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args: object) -> None:  # one line per scrape is noise
        pass


def metrics_app(token: str | None) -> Callable:
    """The WSGI app answering /metrics from the default registry; with ``token`` a scrape
    must send ``Authorization: Bearer <token>`` (or ``?token=``), as for the server's."""
    exposition = make_wsgi_app(REGISTRY)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if token is not None:
            scheme, _, offered = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() != "bearer":
                offered = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
            if not hmac.compare_digest(offered.strip().encode(), token.encode()):
                start_response("401 Unauthorized", [
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", 'Bearer realm="streams-ops"')])
                return [b'{"error": "unauthorized"}']
        return exposition(environ, start_response)

    return app


class WorkerMetricsServer:
    """A running /metrics endpoint (see :func:`serve_worker_metrics`)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread):
        self._server, self._thread = server, thread

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._server.server_address[1]

    def close(self) -> None:
        """Stop serving and release the port; blocks until the serving thread ends."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_worker_metrics(settings: Settings) -> WorkerMetricsServer | None:
    """Serve /metrics on ``STREAMS_HTTP_HOST``:``STREAMS_WORKER_METRICS_PORT`` from a
    daemon thread, so that a scrape is answered even while the worker's loop is busy.

    Returns the running server, or None when the port is 0 (off).
    Raises OpsConfigError when the binding is unsafe (a non-loopback host without
    STREAMS_OPS_TOKEN, the server's rule) and OSError when the port cannot be bound.
    Does not block.
    """
    if not settings.worker_metrics_port:
        return None
    from streams.ops.views import check_binding  # the one rule for what may listen where

    check_binding(settings)
    token = settings.ops_token.get_secret_value() if settings.ops_token is not None else None
    host = settings.http_host.strip("[]")
    server = make_server(host, settings.worker_metrics_port, metrics_app(token),
                         server_class=_Server6 if ":" in host else _Server,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)
    thread.start()
    return WorkerMetricsServer(server, thread)
