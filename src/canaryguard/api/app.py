"""The FastAPI application: REST API under /api/v1, SSE events, /metrics, health, and the
dashboard's pages at /."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from canaryguard import __version__
from canaryguard.api import (
    routes_admin,
    routes_deployments,
    routes_events,
    routes_notifications,
    routes_observations,
    routes_policies,
    routes_records,
    routes_state,
)
from canaryguard.api.auth import check_every_route_is_guarded
from canaryguard.api.limits import MAX_BODY_BYTES, BodySizeLimit, GzipRequest, RejectNul
from canaryguard.api.metrics import MetricsExporter
from canaryguard.api.problems import install_problem_handlers, problem
from canaryguard.dashboard import mount_dashboard
from canaryguard.engine.app import CanaryGuard

__all__ = ["ROUTERS", "api_routes", "create_app"]

log = logging.getLogger(__name__)

ROUTERS = (
    routes_policies.router,
    routes_deployments.router,
    routes_records.router,
    routes_events.router,
    routes_observations.router,
    routes_state.router,
    routes_admin.router,
    routes_notifications.router,
)

DESCRIPTION = """\
canaryguard rolls out versioned policy documents as canaries and rolls them back.

Every call under `/api/v1` needs `Authorization: Bearer <token>`; each operation lists the roles
allowed (`x-canaryguard-roles`). Errors are RFC 9457 problem details. Deployment names may hold
`/` and are used as they are in the path. Changes accept the revision you read, as
`expected_revision` in the body (stale: 409) or as `If-Match: "N"` (stale: 412).
"""


def create_app(
    guard: CanaryGuard,
    *,
    registry: CollectorRegistry | None = None,
    heartbeat_seconds: float = 15.0,
    max_body_bytes: int = MAX_BODY_BYTES,
    monitor_seconds: float = 1.0,
) -> FastAPI:
    """The ASGI app over ``guard``. It does not close ``guard``; its owner does."""
    exporter = MetricsExporter(guard, registry or CollectorRegistry())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        exporter.start()
        guard.lead()
        tasks = [
            asyncio.create_task(_housekeeping(guard)),
            asyncio.create_task(_flushing(guard)),
            asyncio.create_task(_relaying(guard)),
            asyncio.create_task(guard.monitor.run(monitor_seconds)),
            asyncio.create_task(guard.executor.run()),
            asyncio.create_task(guard.notifications.run()),
        ]
        if guard.puller is not None:
            tasks.append(asyncio.create_task(guard.puller.run()))
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            app.state.shutdown.set()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await exporter.stop()

    app = FastAPI(
        title="canaryguard",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # no Swagger UI or ReDoc: FastAPI's pages load their scripts from a CDN, without a
        # pinned version or a CSP, on the dashboard's origin, where they could read the token
        # a user signed in with; /openapi.json stays for any viewer or generator
        docs_url=None,
        redoc_url=None,
        openapi_tags=[
            {"name": "policies", "description": "Versioned policy documents and their schemas"},
            {"name": "deployments", "description": "Who gets which version; canaries and splits"},
            {"name": "snapshots", "description": "Encrypted, restorable states"},
            {"name": "rollbacks", "description": "Rollback records and metrics"},
            {"name": "audit", "description": "The hash-chained audit log"},
            {"name": "events", "description": "CloudEvents, stored and live (SSE)"},
            {"name": "observations", "description": "Outcomes reported by clients"},
            {"name": "tokens", "description": "API tokens and roles"},
            {"name": "keys", "description": "Snapshot encryption keys"},
            {"name": "notifications", "description": "Alert channels and their deliveries"},
        ],
    )
    app.state.guard = guard
    app.state.shutdown = asyncio.Event()
    app.state.heartbeat_seconds = heartbeat_seconds
    app.state.ready = False
    app.state.exporter = exporter
    install_problem_handlers(app)
    check_every_route_is_guarded(ROUTERS)
    for router in ROUTERS:
        app.include_router(router)
    # innermost: the size limit below counts compressed bytes; inflated, a body other than an
    # observation batch gets the same limit as plain JSON
    app.add_middleware(GzipRequest, other=max_body_bytes)
    app.add_middleware(BodySizeLimit, limit=max_body_bytes)
    app.add_middleware(RejectNul)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        if not request.app.state.ready or request.app.state.shutdown.is_set():
            return problem(503, "not-ready", "canaryguard is starting or shutting down")
        try:
            await guard.events.last_seq()  # the database answers
        except Exception as exc:
            return problem(503, "not-ready", f"the database does not answer: {type(exc).__name__}")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        await exporter.refresh()
        return Response(generate_latest(exporter.registry), media_type=CONTENT_TYPE_LATEST)

    mount_dashboard(app)
    return app


async def _housekeeping(guard: CanaryGuard, every: float = 600.0) -> None:
    """Forget old observation batch ids and rows, every ten minutes."""
    while True:
        await asyncio.sleep(every)
        try:
            await guard.observations.housekeeping()
        except Exception:  # a failed round is retried at the next one
            log.exception("housekeeping failed")


async def _flushing(guard: CanaryGuard, every: float = 1.0) -> None:
    """Append merged observations to the database every second (and once more at the end),
    and merge what the other replicas on the database flushed."""
    try:
        while True:
            await asyncio.sleep(every)
            try:
                await guard.observations.flush()
            except Exception:  # the deltas stay in memory and go out with the next flush
                log.exception("flushing observations failed")
            try:
                await guard.observations.follow()
            except Exception:  # the cursors stay: the next round reads the same rows
                log.exception("reading other replicas' observations failed")
    finally:
        with contextlib.suppress(Exception):
            await guard.observations.flush()


async def _relaying(guard: CanaryGuard, every: float = 0.05) -> None:
    """Put the events other replicas commit on this process's bus, twenty times a second, so
    every replica's live streams (events, client state) see every change."""
    started = failing = False
    while True:
        try:
            if started:
                await guard.events.relay()
            else:
                await guard.events.start_relay()
                started = True
            failing = False
        except Exception:  # the next round reads from where the bus is
            if not failing:
                log.exception("relaying other replicas' events failed")
            failing = True
        await asyncio.sleep(every)


def api_routes() -> list[APIRoute]:
    """Every route of the REST API, as declared (what the auth test walks)."""
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
