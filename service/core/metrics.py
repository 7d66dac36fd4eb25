"""Prometheus metrics, one registry per app (tests build many apps in one process).

Names follow Triton's split: request counts/latency, inference (compute) latency,
pending work (queue depth), work done (images labelled), failures.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("seam.service")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "seam_http_request_duration_seconds", "HTTP request latency by route template and status.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.http_errors = Counter(
            "seam_http_errors_total", "HTTP responses with status >= 400.", ["route", "status"], registry=r)
        self.inference_latency = Histogram(
            "seam_inference_duration_seconds", "Engine compute time of one synchronous request.",
            ["op", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.images_labelled = Counter(
            "seam_images_labelled_total", "Images labelled by synchronous requests (jobs: seam_job_images_total).",
            ["endpoint"], registry=r)
        self.inflight = Gauge("seam_inflight_requests", "Synchronous computations running now.", registry=r)
        self.waiting = Gauge("seam_waiting_requests", "Synchronous requests waiting for a slot.", registry=r)
        self.rejected = Counter("seam_rejected_total", "Requests refused by back-pressure (429/503).",
                                ["reason"], registry=r)
        self.ready = Gauge("seam_ready", "1 when models are loaded and warmed.", registry=r)

    def add_jobs_collector(self, stats: Callable[[], dict]) -> None:
        self.registry.register(_JobsCollector(stats))


class _JobsCollector(Collector):
    """Queue depth and job totals, read from the job store at scrape time (they live in
    Redis in Celery mode, where workers in other processes do the work)."""

    def __init__(self, stats: Callable[[], dict]) -> None:
        self.stats = stats

    def collect(self) -> Iterator:
        try:
            s = self.stats()
        except Exception as exc:  # broker down: scrape the rest
            log.warning("job metrics unavailable: %s", exc)
            return
        g = GaugeMetricFamily("seam_queue_depth", "Pending work: chunks waiting in the queue, jobs not finished.",
                              labels=["kind"])
        g.add_metric(["chunks"], s.get("queued_chunks", 0))
        g.add_metric(["active_jobs"], s.get("active_jobs", 0))
        yield g
        c = CounterMetricFamily("seam_job_images", "Job images processed (each image counted once).",
                                labels=["result"])
        c.add_metric(["done"], s.get("images_done", 0))
        c.add_metric(["failed"], s.get("images_failed", 0))
        yield c


class MetricsMiddleware:
    """Latency histogram and error counter keyed by the route template (bounded cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_template(scope)
            if template != "/metrics":
                self.metrics.request_latency.labels(scope["method"], template, str(status)).observe(
                    time.perf_counter() - start)
            if status >= 400:
                self.metrics.http_errors.labels(template, str(status)).inc()


def route_template(scope: Scope) -> str:
    """The route template a request was for, also when a middleware answered it before routing
    (401 from the API-key check, 413 from the body limit): those never set scope["route"].
    Mounted apps count under their mount path."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    return _template_of(getattr(scope.get("app"), "routes", None) or [], scope.get("method", ""),
                        scope.get("path", "")) or "unmatched"


def _template_of(routes: list, method: str, path: str) -> str | None:
    """The template of the route (included routers flattened) matching path and method, else one
    matching the path only (a 405), else None."""
    try:  # FastAPI >= 0.16x keeps included routers as routes of their own: flatten them
        from fastapi.routing import iter_route_contexts

        candidates = [(c.path, c.original_route) for c in iter_route_contexts(routes)]
    except ImportError:
        candidates = [(getattr(r, "path", None), r) for r in routes]
    path_only = None
    for template, route in candidates:
        if not template:
            continue
        if isinstance(route, Mount):
            if path == template or path.startswith(template.rstrip("/") + "/"):
                return template
            continue
        if _regex(template).match(path):
            methods = getattr(route, "methods", None)
            if not methods or method in methods:
                return template
            path_only = path_only or template
    return path_only


@lru_cache(maxsize=512)
def _regex(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]
