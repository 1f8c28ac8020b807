"""The FastAPI application."""

from __future__ import annotations

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
from policy.authz import Authorizer
from sandbox.app import (
    problems,
    routes_billing,
    routes_catalogue,
    routes_grants,
    routes_identity,
    routes_jobs,
    routes_prices,
    routes_quality,
    routes_registrations,
    routes_system,
)
from sandbox.app.deps import AppState
from sandbox.app.middleware import MetricsMiddleware
from sandbox.billing.usage import Metering
from sandbox.clock import Clock, SystemClock
from sandbox.config import Settings
from sandbox.executor import EngineLimits, WorkerPool
from sandbox.identity import KeyCache
from sandbox.recorder import Recorder
from sandbox.runs import RunService
from sandbox.store.db import load_policy_rows, make_engine, session_factory
from sandbox.tracing import make_tracer


def create_app(settings: Settings, clock: Clock | None = None, *, pool: WorkerPool | None = None,
               span_exporter: SpanExporter | None = None) -> FastAPI:
    """Build the app over an initialized SLUICE_HOME (see `sluice init`); `pool` shares an existing worker pool."""
    engine = make_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    with sessions() as s:
        rows = load_policy_rows(s)
    keyring = KeyRing(settings.keys_dir)
    limits = EngineLimits(memory_limit_mb=settings.run_memory_limit_mb, threads=settings.run_threads,
                          timeout_ms=settings.run_timeout_ms, address_space_mb=settings.worker_address_space_mb)
    run_service = RunService(home=settings.resolved_home, pool_size=settings.workers, limits=limits,
                             shared_pool=pool)
    metrics = make_metrics(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None)
    recorder = Recorder(sessions)
    clock = clock or SystemClock()
    metering = Metering(recorder=recorder, sessions=sessions, clock=clock, metrics=metrics,
                        vat=Vat(settings.prices_include_vat, Decimal(settings.vat_rate)),
                        tz=ZoneInfo(settings.billing_timezone))
    state = AppState(settings=settings, clock=clock, sessions=sessions,
                     authorizer=Authorizer(rows), metrics=metrics,
                     key_cache=KeyCache(settings.auth_cache_seconds), recorder=recorder,
                     tracer=make_tracer(settings.tracing_enabled, span_exporter),
                     keyring=keyring, engine=engine, runs=run_service, metering=metering)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.workers > 0:
            await anyio.to_thread.run_sync(run_service.pool)  # spawn and warm the workers before serving
        yield
        metering.close()
        state.recorder.close()
        run_service.close()
        engine.dispose()

    app = FastAPI(title="Sluice", version="0.1.0", lifespan=lifespan,
                  description="Authorized operation of public data: governed queries, audit, metering.")
    app.state.sluice = state
    problems.install(app)
    for module in (routes_system, routes_identity, routes_catalogue, routes_registrations, routes_quality,
                   routes_grants, routes_jobs, routes_prices, routes_billing):
        app.include_router(module.router)

    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def app_from_environment() -> FastAPI:
    """The app built from SLUICE_* settings: the factory each `sluice serve --http-workers N` process calls."""
    from sandbox.config import load_settings

    return create_app(load_settings())
