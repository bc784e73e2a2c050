"""The server's Prometheus metrics (`GET /metrics`): requests by route and status, latency and time to first
token, generated tokens, and the engine's queue depth, batch size and recent tokens/s read at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
ROUTES = {
    "/",
    "/health",
    "/ready",
    "/metrics",
    "/generate",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/stream",
}


class ServeMetrics:
    def __init__(self, engine):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "r1kit_serve_requests",
            "HTTP requests by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "r1kit_serve_request_latency_seconds",
            "Generation requests, arrival to last byte",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "r1kit_serve_time_to_first_token_seconds",
            "Arrival to the first generated token",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "r1kit_serve_prompt_tokens", "Prompt tokens of finished requests", registry=self.registry
        )
        self.completion_tokens = Counter(
            "r1kit_serve_completion_tokens", "Generated tokens of finished requests", registry=self.registry
        )
        self.registry.register(_EngineCollector(engine))

    def route_of(self, path: str) -> str:
        return path if path in ROUTES else "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector:
    """The engine's live figures, read when Prometheus scrapes."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        stats = self.engine.stats()
        for name, key, help_text in [
            ("r1kit_serve_queue_depth", "queue_depth", "Requests waiting for a place in the batch"),
            ("r1kit_serve_batch_size", "batch_size", "Requests being decoded together now"),
            ("r1kit_serve_tokens_per_second", "tokens_per_second", "Generated tokens/s over the last 10 s"),
        ]:
            yield GaugeMetricFamily(name, help_text, value=stats[key])


class StatusRecorder:
    """ASGI middleware: counts every HTTP response by route and status (streamed responses included)."""

    def __init__(self, app, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.labels(self.metrics.route_of(scope["path"]), str(status)).inc()
