"""The FastAPI application."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from zoneinfo import ZoneInfo

import anyio.to_thread
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter

from disclosure.signing import KeyRing
from metering.metrics import make_metrics
from metering.money import Vat
from policy import audit_kernel
from policy.authz import Authorizer
from policy.output import Dominance, DominanceRule
from sandbox.app import (
    docs,
    problems,
    routes_audit,
    routes_billing,
    routes_catalogue,
    routes_console,
    routes_disclosures,
    routes_grants,
    routes_identity,
    routes_jobs,
    routes_prices,
    routes_products,
    routes_provider,
    routes_quality,
    routes_registrations,
    routes_system,
)
from sandbox.app.deps import PUBLIC_ROUTES, AppState, check_function_scope, record_unaudited
from sandbox.app.direct import DirectDispatch, check_direct_routes
from sandbox.app.limits import RequestLimits
from sandbox.app.middleware import RequestMiddleware
from sandbox.audit_log import AuditLog, LogScheduler
from sandbox.billing.usage import Metering
from sandbox.clock import Clock, SystemClock
from sandbox.config import Settings
from sandbox.executor import EngineLimits, WorkerPool
from sandbox.identity import KeyCache
from sandbox.ratelimit import RateLimiter
from sandbox.recorder import Recorder
from sandbox.release import ReleaseService
from sandbox.runs import RunService
from sandbox.server_lease import ServerLease
from sandbox.store.db import load_policy_rows, make_engine, session_factory
from sandbox.tracing import make_tracing


def create_app(settings: Settings, clock: Clock | None = None, *, pool: WorkerPool | None = None,
               span_exporter: SpanExporter | None = None) -> FastAPI:
    """Build the app over an initialized SLUICE_HOME (see `sluice init`); `pool` shares an existing worker pool."""
    # requests hold at most db_pool_size connections (deps.db_session); as many again cover run-start records,
    # release locks, the sequencer and refusal records made while a request's own session is open
    engine = make_engine(settings.resolved_database_url, pool_size=settings.db_pool_size,
                         max_overflow=settings.db_pool_size + 8)
    sessions = session_factory(engine)
    with sessions() as s:
        rows = load_policy_rows(s)
    keyring = KeyRing(settings.keys_dir)
    limits = EngineLimits(memory_limit_mb=settings.run_memory_limit_mb, threads=settings.run_threads,
                          timeout_ms=settings.run_timeout_ms, address_space_mb=settings.worker_address_space_mb)
    dominance = Dominance(rule=DominanceRule(settings.dominance_rule), p=settings.dominance_p,
                          n=settings.dominance_n, k_percent=settings.dominance_k_percent)
    run_service = RunService(home=settings.resolved_home, pool_size=settings.workers, limits=limits,
                             shared_pool=pool, dominance=dominance, spark_remote=settings.spark_remote,
                             spark_master=settings.spark_master)
    clock = clock or SystemClock()
    metrics = make_metrics(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None)
    releases = ReleaseService(sessions, engine, settings.resolved_home, budget=settings.audit_budget,
                              strict=settings.audit_strict, metrics=metrics)
    tracing = make_tracing(span_exporter)
    audit_log = AuditLog(sessions, keyring, settings.resolved_log_origin, clock)
    scheduler = LogScheduler(audit_log, integrate_ms=settings.log_integrate_interval_ms,
                             checkpoint_seconds=settings.checkpoint_interval_seconds, metrics=metrics)
    recorder = Recorder(sessions)
    metering = Metering(recorder=recorder, sessions=sessions, clock=clock, metrics=metrics,
                        vat=Vat(settings.prices_include_vat, Decimal(settings.vat_rate)),
                        tz=ZoneInfo(settings.billing_timezone))
    lease = ServerLease(engine, settings.resolved_home)  # this process's instance, held while it serves
    run_service.instance = lease.id
    state = AppState(settings=settings, clock=clock, sessions=sessions,
                     authorizer=Authorizer(rows), metrics=metrics,
                     key_cache=KeyCache(settings.auth_cache_seconds), recorder=recorder,
                     tracer=tracing.spans, keyring=keyring, engine=engine, runs=run_service, releases=releases,
                     audit_log=audit_log, scheduler=scheduler,
                     limiter=RateLimiter(settings.unauthenticated_rate_per_minute, settings.unauthenticated_burst),
                     metering=metering)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.db_slots = asyncio.Semaphore(settings.db_pool_size)
        await anyio.to_thread.run_sync(lease.acquire)
        if settings.workers > 0:
            await anyio.to_thread.run_sync(run_service.pool)  # spawn and warm the workers before serving
        scheduler.start()
        audit_kernel.warm_in_background()  # the release audit's compiled kernels, off the request path
        yield
        metering.close()
        await anyio.to_thread.run_sync(scheduler.stop)
        run_service.close()
        lease.release()
        tracing.shutdown()
        recorder.close()
        engine.dispose()

    app = FastAPI(title="Sluice", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Authorized operation of public data: governed queries, audit, metering.")
    app.state.sluice = state
    problems.install(app, record_unaudited)
    # Requests are matched against the routes in this order, router by router; the run POST (the hot path) is in
    # the first. No route path overlaps another router's, so the order decides nothing else (a test checks that no
    # route is shadowed by an earlier one).
    for module in (routes_jobs, routes_system, routes_identity, routes_catalogue, routes_registrations,
                   routes_quality, routes_grants, routes_audit, routes_prices, routes_billing, routes_products,
                   routes_provider, routes_disclosures, routes_console):
        app.include_router(module.router)
    docs.install(app, PUBLIC_ROUTES)
    check_function_scope(app)
    check_direct_routes(app)
    app.add_middleware(DirectDispatch, router=app.router)  # innermost: the run POST straight to its route
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_request_bytes)
    app.add_middleware(RequestMiddleware, metrics=state.metrics, tracer=tracing.requests)  # the request span
    return app


def settle_heap() -> None:
    """Collect, then freeze what start-up left alive (modules, the app, its caches) out of the cyclic garbage
    collector's reach, once before serving: a full collection then scans only what requests create
    (docs/performance.md has the throughput benchmark's collection times with and without it)."""
    gc.collect()
    gc.freeze()


def app_from_environment() -> FastAPI:
    """The app built from SLUICE_* settings: the factory each `sluice serve --processes N` process calls."""
    from sandbox.config import load_settings
    from sandbox.logs import configure_json_logging

    configure_json_logging()
    app = create_app(load_settings())
    settle_heap()
    return app
