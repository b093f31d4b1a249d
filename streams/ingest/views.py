"""The collector's HTTP routes, wire-compatible with the Segment HTTP Tracking API.

``POST /v1/track|page|screen|identify|alias|group|batch`` (and the short forms browser
SDKs use, ``/v1/t|p|s|i|a|g|b``) with HTTP Basic auth (write key as user name) or, without
an Authorization header, the body's ``writeKey``; CORS for browsers in
``streams.ingest.cors``. A request is answered 200 only after Kafka acknowledged every event of it
(and every dead letter of its rejected events). The work per request is in
``streams.ingest.logic``; this module reads the body, calls it and writes the result.

Answers (every body is JSON; errors carry ``error``, ``field`` and ``message``):

=====  ==========================================================================
200    ``{"success": true, "accepted": n}``, plus ``rejected`` (index, field, reason
       of each invalid batch event, dead-lettered) and ``deadLettered``
400    malformed JSON, a body of the wrong shape, an undecodable Content-Encoding, an
       invalid single event (missing both userId and anonymousId, a schema
       violation), an unknown type (``/v1/merge`` ...)
401    no, malformed or unknown write key (header or body)
403    a browser origin not in ``STREAMS_CORS_ORIGINS`` (``streams.ingest.cors``)
413    request over ``collector_max_request_bytes`` (500 KB) or an event over
       ``collector_max_event_bytes`` (32 KB, measured on the event's JSON as written)
429    over the key's rate (token bucket of ``collector_rate`` events/s, burst
       ``collector_burst``), with ``Retry-After``
503    Kafka did not acknowledge in ``collector_ack_timeout``; retrying is safe (the
       messageIds deduplicate)
=====  ==========================================================================

Nothing of a request answered 400, 401, 403, 413 or 429 is written.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from streams.events.dlq import dead_letter_for_rejection
from streams.events.models import SOCIAL_CHANNELS, SOURCES
from streams.events.schemas import SchemaSet, default_schemas
from streams.events.time import utc_now
from streams.events.validate import Limits
from streams.ingest import cors, logic
from streams.ingest.metrics import COUNTERS, EVENTS_ACCEPTED, EVENTS_REJECTED, REQUESTS_REFUSED
from streams.ingest.models import RequestError, RequestPlan
from streams.kafka import EventWriter, OutgoingRecord
from streams.settings import Settings

log = logging.getLogger(__name__)

SINGLE_TYPES = ("track", "page", "screen", "identify", "alias", "group")
# The short paths of Segment's browser SDK (analytics-next), aliases of the long ones.
SHORT_PATHS = {"t": "track", "p": "page", "s": "screen", "i": "identify", "a": "alias",
               "g": "group", "b": None}


class CollectorConfigError(ValueError):
    """The collector's settings cannot work (for example a write key bound to an unknown
    source)."""


class Collector:
    """State of the collector: settings, schemas, rate limiter and the Kafka writer."""

    def __init__(
        self, settings: Settings, *, writer: EventWriter | None = None,
        clock: Callable[[], datetime] = utc_now, monotonic: Callable[[], float] = time.monotonic,
        schemas: SchemaSet | None = None,
        prepare_topics: Callable[[Settings], Awaitable[object]] | None = None,
    ):
        config = settings.collector
        allowed = set(SOURCES) | set(SOCIAL_CHANNELS)
        allowed.discard("social")
        for position, source in enumerate(config.write_keys.values(), start=1):
            if source not in allowed:
                # Name the entry's position and source, never the key (a credential).
                raise CollectorConfigError(
                    f"STREAMS_WRITE_KEYS entry #{position} binds a key to unknown source "
                    f"{source!r}; expected one of {', '.join(sorted(allowed))}")
        self.settings = settings
        self.write_keys = config.write_keys
        self.prepare_topics = prepare_topics
        self.writer = writer or EventWriter(settings)
        self.clock = clock
        self.monotonic = monotonic
        self.schemas = schemas or default_schemas()
        self.limits = Limits.from_settings(settings)
        self.rate_limiter = logic.RateLimiter(config.rate, config.burst)
        self.dlq_topic = settings.kafka.dlq
        self.topics = {kind: settings.kafka.event_topic(kind)
                       for kind in ("click", "view", "social", "identify")}

    async def lifespan(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: make sure topics exist, start and stop the producer."""
        if self.prepare_topics is None:
            from streams.topics import ensure_topics

            await ensure_topics(self.settings)
        else:
            await self.prepare_topics(self.settings)
        await self.writer.start()
        # Requests allocate many short-lived, acyclic dicts (parsed events), which
        # reference counting frees; the cyclic collector's frequent young-generation
        # passes over them cost about a third of the per-event time. Move everything
        # loaded so far out of its sight and run it less often.
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            await self.writer.stop()

    # --- request handling ---------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes | RequestError:
        """The (decompressed) body, or a 413 as soon as it passes the request limit."""
        limit = self.limits.max_request_bytes
        too_large = RequestError(413, "request_too_large", "max_request_bytes",
                                 f"request body is over the limit of {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            return too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await request.content.readany()
            except RequestPayloadError as exc:
                # For example a body that says gzip but is not: aiohttp cannot decode it.
                encoding = request.headers.get("Content-Encoding", "")[:40] or "none"
                return RequestError(400, "malformed_body", "Content-Encoding",
                                    f"request body cannot be read with Content-Encoding "
                                    f"{encoding!r}: {str(exc).splitlines()[-1].strip()}")
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(self, request: web.Request, path_type: str | None) -> web.Response:
        """Serve one collector call; ``path_type`` is None for /v1/batch."""
        header = request.headers.get("Authorization")
        caller = logic.authenticate(header, self.write_keys)
        if isinstance(caller, RequestError) and header:
            return self._refuse(caller)
        if not isinstance(caller, RequestError):
            # A key already over its rate is refused before its body is read or parsed
            # (a body's writeKey is known only once the body is parsed).
            wait = self.rate_limiter.take(caller.write_key, 0, self.monotonic())
            if wait > 0:
                return self._refuse(logic.rate_limited(caller.source, wait,
                                                       self.rate_limiter.rate))
        body = await self._read_body(request)
        if isinstance(body, RequestError):
            return self._refuse(body)
        parsed = logic.parse_request(body, path_type, self.limits)
        if isinstance(caller, RequestError):  # no header: the key may be in the body
            caller = logic.authenticate(None, self.write_keys, getattr(parsed, "write_key", None))
            if isinstance(caller, RequestError):
                return self._refuse(caller)
        if isinstance(parsed, RequestError):
            return self._refuse(parsed)
        source = caller.source
        # The bucket is per write key; the answer names its source, never the key.
        wait = self.rate_limiter.take(caller.write_key, len(parsed.events), self.monotonic())
        if wait > 0:
            return self._refuse(logic.rate_limited(source, wait, self.rate_limiter.rate))
        now = self.clock()
        plan = logic.plan_events(parsed, path_type=path_type, key_source=source,
                                 received_at=now, schemas=self.schemas, limits=self.limits,
                                 client_ip=request.remote)
        if isinstance(plan, RequestError):
            return self._refuse(plan)

        topics = self.topics
        records = [OutgoingRecord(topics[e.kind], e.key.encode() or None, e.value)
                   for e in plan.accepted]
        for rejection in plan.rejected:
            letter = dead_letter_for_rejection(
                rejection, topic=topics[rejection.kind] if rejection.kind else None,
                key_source=source, now=now)
            records.append(OutgoingRecord(self.dlq_topic, letter.key, letter.value,
                                          letter.headers))
        try:
            await self.writer.write(records)
        except Exception as exc:  # noqa: BLE001 - any Kafka failure is a 503 to retry
            log.warning("kafka write failed for %d records: %s", len(records), exc)
            return self._refuse(RequestError(
                503, "kafka_unavailable", "kafka",
                f"events could not be acknowledged by Kafka ({type(exc).__name__}); retry"))

        self._count(plan, source)
        answer: dict = {"success": True, "accepted": len(plan.accepted)}
        if plan.rejected:
            answer["rejected"] = [{"index": r.index, "field": r.field, "reason": r.reason}
                                  for r in plan.rejected]
            answer["deadLettered"] = len(plan.rejected)
        return _json(200, answer)

    def _count(self, plan: RequestPlan, source: str) -> None:
        per_kind: dict[str, int] = {}
        for event in plan.accepted:
            per_kind[event.kind] = per_kind.get(event.kind, 0) + 1
        for kind, n in per_kind.items():
            COUNTERS[EVENTS_ACCEPTED].labels(kind, source).inc(n)
        if plan.rejected:
            COUNTERS[EVENTS_REJECTED].labels(source).inc(len(plan.rejected))

    def _refuse(self, error: RequestError) -> web.Response:
        COUNTERS[REQUESTS_REFUSED].labels(str(error.status)).inc()
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        return _json(error.status, error.body(), headers)


def _json(status: int, doc: dict, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), headers=headers,
                        content_type="application/json")


COLLECTOR_KEY = web.AppKey("ingest_collector", Collector)


def register(app: web.Application, settings: Settings, *, collector: Collector | None = None
             ) -> Collector:
    """Add the collector's routes to ``app``; its producer starts and stops with the app.

    Raises CollectorConfigError for write keys bound to unknown sources or a
    STREAMS_CORS_ORIGINS entry that is not an origin.
    """
    collector = collector or Collector(settings)
    app[COLLECTOR_KEY] = collector
    try:
        policy = cors.parse_origins(settings.cors_origins)
    except cors.CorsConfigError as exc:
        raise CollectorConfigError(str(exc)) from None
    app.middlewares.append(cors.cors_middleware(policy))
    app.cleanup_ctx.append(collector.lifespan)

    def endpoint(path_type: str | None):
        async def handler(request: web.Request) -> web.Response:
            return await collector.handle(request, path_type)
        return handler

    for event_type in SINGLE_TYPES:
        app.router.add_post(f"/v1/{event_type}", endpoint(event_type))
    app.router.add_post("/v1/batch", endpoint(None))
    for short, event_type in SHORT_PATHS.items():
        app.router.add_post(f"/v1/{short}", endpoint(event_type))
    # Segment's import endpoint takes the same body as batch.
    app.router.add_post("/v1/import", endpoint(None))

    async def unknown_type(request: web.Request) -> web.Response:
        # Any other type: a JSON 400 naming the type, not a 404.
        source = logic.authenticate(request.headers.get("Authorization"),
                                    collector.write_keys)
        if isinstance(source, RequestError):
            return collector._refuse(source)  # noqa: SLF001
        name = request.match_info["type"][:40]
        return collector._refuse(RequestError(  # noqa: SLF001
            400, "unknown_type", "type",
            f"unknown type {name!r}; expected one of {', '.join(SINGLE_TYPES)} or batch"))

    app.router.add_post("/v1/{type}", unknown_type)
    return collector
