"""The runtime one front end serves from, built whole in one step: endpoint pool, metrics scraper, KV index and
subscriber, block sizes, the scheduler holder and its reloader, decisions, metrics, the governance pipeline, and the
lean HTTP client every engine call goes through."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from llmd_kserve.control.decisions import DecisionLog
from llmd_kserve.control.endpoints import EndpointPool, EndpointsFileWatcher, parse_endpoints
from llmd_kserve.control.engine_api import engine_call
from llmd_kserve.control.holder import SchedulerHolder
from llmd_kserve.control.kv_sources import KVEventSourceDiscovery
from llmd_kserve.control.outliers import EjectionPolicy, OutlierEjector
from llmd_kserve.control.readiness import Readiness, ReadinessGate
from llmd_kserve.control.reload import ConfigReloader, reload_counter
from llmd_kserve.control.render import RenderTokenizer
from llmd_kserve.control.sessions import SessionCollector
from llmd_kserve.control.settings import RouterSettings, gateway_of, governance_of
from llmd_kserve.control.shared_sessions import SharedSessions
from llmd_kserve.control.signals import autoscaling_collector
from llmd_kserve.control.stalls import StallCollector, StallPolicy, StallWatch
from llmd_kserve.defaults import BLOCK_SIZE
from llmd_kserve.governance.pipeline import Governance
from llmd_kserve.kvcache.block_sizes import EngineBlockSizes
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.kvcache.subscriber import KVEventSubscriber
from llmd_kserve.lean_http import StreamClient
from llmd_kserve.metrics.autoscaling import HeadroomMeter, HeldRequests
from llmd_kserve.metrics.collectors import RouterStatsCollector
from llmd_kserve.metrics.router_metrics import RouterMetrics
from llmd_kserve.metrics.scraper import MetricsScraper
from llmd_kserve.state_store import StateStore
from llmd_kserve.types import Endpoint, EndpointId, EndpointState

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder().decode


def _routes_on_kv_events(holder: SchedulerHolder) -> bool:
    return any(getattr(p, "type", None) == "precise-prefix-producer" for p in holder.current.producers)


def _render_endpoint(pool: EndpointPool, scraper: MetricsScraper) -> str | None:
    """An engine to render prompts on: the first with fresh metrics, else the first."""
    ids = [e.id for e in pool.snapshot]
    fresh = [i for i in ids if not scraper.get(i).stale]
    return (fresh or ids)[0] if ids else None


def _streams_kv_events(endpoint: Endpoint) -> bool:
    """The router hears an endpoint's KV events only through the ZMQ stream it was given (``#kv=``)."""
    return endpoint.kv_events is not None


def _scraper(s: RouterSettings, adaptive: bool) -> MetricsScraper:
    if not adaptive or (s.scrape_idle_interval is not None and s.scrape_idle_interval <= s.scrape_interval):
        return MetricsScraper(interval=s.scrape_interval)
    return MetricsScraper(interval=s.scrape_interval, idle_interval=s.scrape_idle_interval,
                          max_rate=s.scrape_max_rate)


@dataclass(slots=True)
class Runtime:
    """Everything a front end (the HTTP router or the EPP) schedules with; ``start``/``stop`` run its background
    parts. Build it with :meth:`build`."""

    settings: RouterSettings
    pool: EndpointPool
    scheduler: SchedulerHolder
    reloader: ConfigReloader
    scraper: MetricsScraper
    index: KVIndex
    subscriber: KVEventSubscriber
    block_sizes: EngineBlockSizes
    """Each endpoint's KV block size as the scheduler keys its prompts (``describe`` for a debug page)."""
    metrics: RouterMetrics
    decisions: DecisionLog
    governance: Governance
    outliers: OutlierEjector
    stalls: StallWatch
    """Stall detection: suspect endpoints (no new picks) and the probes that clear them."""
    http: StreamClient
    """The one HTTP client to the engines: forwarded requests, P/D prefill hops, models, KV sources, render."""
    tokenizer: Any
    """The local tokenizer (None: the engines render), for the prompt-token limit and metering."""
    render: RenderTokenizer | None
    kv_discovery: KVEventSourceDiscovery
    endpoints_file: Path | None
    models: tuple[str, ...] = ()
    held: HeldRequests = field(default_factory=HeldRequests)
    """Requests ``latency-slo-admitter`` holds back now, per priority band (``llmd_router_queue_depth``)."""
    headroom: HeadroomMeter | None = None
    """Recent decisions' TTFT headroom against ``settings.ttft_slo_s`` (None: no target)."""
    model_cards: tuple[dict[str, Any], ...] = ()
    readiness: ReadinessGate = field(default_factory=ReadinessGate)
    """``/ready``: endpoints scraped once, the KV index warm (``control.readiness``)."""
    shared_sessions: SharedSessions | None = None
    """Session homes and response pins in the shared store (``shared_sessions``), or None: this replica's own."""
    _own_store: StateStore | None = None
    _watcher: EndpointsFileWatcher | None = None
    _warned_blind: frozenset[str] = frozenset()
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @classmethod
    def build(cls, settings: RouterSettings | None = None, endpoints: Sequence[str | Endpoint] = (),
              endpoints_file: str | Path | None = None, *, adaptive_scrape: bool = True,
              metrics: RouterMetrics | None = None, sees_answers: bool | None = None) -> Runtime:
        """Build every part (scheduler from config, KV index, subscriber, scraper, governance); nothing runs until
        ``start``. ``adaptive_scrape``: poll endpoints by the requests on them (the router reports them); a front end
        that does not see answers end (the EPP in ``headers`` mode) passes False and keeps fixed-rate polling.
        ``sees_answers``: the front end hears each answer begin, so attempts are watched for stalls (default:
        ``adaptive_scrape``)."""
        from llmd_kserve.config.build import build_scheduler
        from llmd_kserve.config.loader import shipped_configs
        from llmd_kserve.latency import load_profile
        from llmd_kserve.plugins.base import PluginContext
        from llmd_kserve.tokenizer import load_tokenizer
        from llmd_kserve.tokenizer_hf import HFTokenizer

        s = settings or RouterSettings()
        index = KVIndex(max_keys=s.kv_index_max_keys)
        block_sizes = EngineBlockSizes(s.block_size, index)
        ctx = PluginContext(tokenizer=load_tokenizer(None if s.tokenizer == "render" else s.tokenizer), index=index,
                            rng=random.Random(s.seed), clock=time.monotonic, profile=load_profile(s.profile),
                            block_size=s.block_size or BLOCK_SIZE, block_size_of=block_sizes,
                            has_kv_events=_streams_kv_events, ttft_target_s=s.ttft_slo_s)
        holder = SchedulerHolder(build_scheduler(s.config, ctx))
        metrics = metrics or RouterMetrics()
        watch = None if str(s.config) in shipped_configs() or not Path(s.config).is_file() else s.config
        reloader = ConfigReloader(holder, str(s.config), watch, s.config_poll_interval,
                                  reload_counter(metrics.registry))
        eps = [e for e in endpoints if isinstance(e, Endpoint)]
        eps += parse_endpoints([e for e in endpoints if not isinstance(e, Endpoint)])
        pool = EndpointPool(eps)
        tokenizer = ctx.tokenizer if s.tokenizer != "render" else None
        gateway = gateway_of(s, metrics.registry, lambda: len(pool.snapshot))
        gateway.detokenize = tokenizer.decode if isinstance(tokenizer, HFTokenizer) else None
        reloader.audit = gateway.audit_admin  # config changes go to the audit trail with who made them
        http = StreamClient(connect_timeout=s.connect_timeout)
        call = engine_call(http)
        scraper, subscriber = _scraper(s, adaptive_scrape), KVEventSubscriber(index)
        outliers = OutlierEjector(EjectionPolicy(base_ejection_s=s.eject_s))
        stalls = StallWatch(StallPolicy(factor=s.stall_factor, floor_s=s.stall_floor_s), ctx.profile,
                            sees_answers=adaptive_scrape if sees_answers is None else sees_answers)
        rt = cls(settings=s, pool=pool, scheduler=holder, reloader=reloader, scraper=scraper, index=index,
                 subscriber=subscriber, block_sizes=block_sizes, metrics=metrics, decisions=DecisionLog(s.decisions_size),
                 governance=governance_of(s, gateway), outliers=outliers, stalls=stalls, http=http, tokenizer=tokenizer,
                 render=RenderTokenizer(call, partial(_render_endpoint, pool, scraper))
                 if s.tokenizer == "render" else None,
                 kv_discovery=KVEventSourceDiscovery(pool, call, partial(_routes_on_kv_events, holder)),
                 endpoints_file=Path(endpoints_file) if endpoints_file else None, models=tuple(s.served_models),
                 headroom=HeadroomMeter(s.ttft_slo_s) if s.ttft_slo_s is not None else None,
                 readiness=ReadinessGate(s.ready_kv_grace_s))
        metrics.registry.register(RouterStatsCollector(subscriber.stats, scraper.stats, outliers.ejected_now))
        metrics.registry.register(StallCollector(stalls))
        metrics.registry.register(SessionCollector(holder))
        metrics.registry.register(autoscaling_collector(rt))
        if s.shared_sessions and s.state_url:
            limiter = gateway.shared  # one connection pool (and one error counter) for all shared state
            store = limiter.store if limiter is not None else StateStore(s.state_url, metrics.registry)
            rt._own_store = None if limiter is not None else store
            rt.shared_sessions = SharedSessions(store, holder, rt.spawn)
        return rt

    # --- what handlers use ----------------------------------------------------------------------------------------
    def endpoint_states(self) -> list[EndpointState]:
        get = self.scraper.get
        return [EndpointState(e, get(e.id)) for e in self.pool.snapshot]

    def set_endpoints(self, endpoints: Sequence[str | Endpoint]) -> bool:
        """Replace the endpoint pool programmatically (Kubernetes discovery calls this)."""
        eps = [e for e in endpoints if isinstance(e, Endpoint)]
        eps += parse_endpoints([e for e in endpoints if not isinstance(e, Endpoint)])
        return self.pool.set_endpoints(eps)

    def ready(self) -> Readiness:
        """Whether this replica should get traffic yet (``control.readiness``)."""
        stats = self.scraper.stats()

        def scraped(eid: EndpointId) -> bool:
            st = stats.get(eid)
            return st is not None and st.scrapes + st.errors > 0

        return self.readiness.check(self.endpoint_states(), scraped, self.subscriber.stats(),
                                    self.routes_on_kv_events(), time.monotonic())

    def routes_on_kv_events(self) -> bool:
        """Whether the scheduler (as configured now) routes on the KV-event index (precise prefix)."""
        return _routes_on_kv_events(self.scheduler)

    def kv_blind_endpoints(self) -> list[str]:
        """Endpoints without a KV-event stream while the scheduler routes on the KV-event index (precise prefix);
        the precise producer estimates their prefixes router-side instead (``fallbackToApprox``)."""
        if not self.routes_on_kv_events():
            return []
        return [e.id for e in self.pool.snapshot if not _streams_kv_events(e)]

    def _warn_kv_blind(self) -> None:
        blind = frozenset(self.kv_blind_endpoints())
        if blind and blind != self._warned_blind:
            log.warning("precise prefix routing, but %d of %d endpoints have no KV-event stream (add "
                        "#kv=tcp://host:port, vLLM --kv-events-config): %s; their cached prefixes are estimated "
                        "router-side (approximate prefix index) instead", len(blind), len(self.pool.snapshot),
                        ", ".join(sorted(blind)))
        self._warned_blind = blind

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def spawn(self, result: Any) -> asyncio.Future[Any] | None:
        """Run an awaitable in the background (kept until it ends; cancelled by ``stop``)."""
        if not inspect.isawaitable(result):
            return None
        task = asyncio.ensure_future(result)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_pool_change(self, old: tuple[Endpoint, ...], new: tuple[Endpoint, ...]) -> None:
        self.scraper.set_endpoints(new)
        self.subscriber.set_endpoints(new)
        self._warn_kv_blind()
        if self.governance.gateway.flow is not None:
            self.governance.gateway.flow.kick()  # capacity follows the pool size
        new_ids = {e.id for e in new}
        for e in old:
            if e.id not in new_ids:
                self.block_sizes.forget(e.id)
                self.scheduler.remove_endpoint(e.id)
                self.outliers.forget(e.id)
                self.stalls.forget(e.id)
                self.index.remove_endpoint(e.id)
        if old and not self.settings.served_models:
            self.spawn(self.refresh_models())

    async def refresh_models(self) -> None:
        """Union of the endpoints' ``/v1/models`` (kept as it was when no endpoint answers)."""
        if self.settings.served_models:
            return
        call = engine_call(self.http)

        async def one(base: str) -> list[dict[str, Any]]:
            status, raw = await call(base, "/v1/models", None, 2.0)
            return list(_decode(raw).get("data", [])) if status == 200 else []

        results = await asyncio.gather(*(one(e.id) for e in self.pool.snapshot), return_exceptions=True)
        cards: dict[str, dict[str, Any]] = {}
        for res in results:
            if isinstance(res, list):
                for card in res:
                    if isinstance(card, dict) and isinstance(card.get("id"), str):
                        cards.setdefault(card["id"], card)
        if cards:
            self.models, self.model_cards = tuple(cards), tuple(cards.values())

    async def _models_loop(self) -> None:
        while True:  # retry fast until some endpoint has answered, then every models_refresh_interval
            await asyncio.sleep(self.settings.models_refresh_interval if self.models else 0.5)
            try:
                await self.refresh_models()
            except Exception as exc:
                log.debug("model refresh failed: %s", exc)

    async def start(self) -> None:
        s = self.settings
        if self.endpoints_file is not None:
            self._watcher = EndpointsFileWatcher(self.endpoints_file, self.pool, s.endpoints_poll_interval)
            self._watcher.load_now()
        for part in (self.scraper, self.subscriber):
            res = part.start()
            if inspect.isawaitable(res):
                await res
        with contextlib.suppress(TimeoutError):  # engines up now: subscribed from the start, not warned about
            async with asyncio.timeout(1.0):
                await self.kv_discovery.discover_once()
        self.kv_discovery.start()
        self.pool.subscribe(self._on_pool_change)
        self._on_pool_change((), self.pool.snapshot)
        if self._watcher is not None:
            self._watcher.start()
        self.reloader.start()
        if self.stalls.enabled:
            self.spawn(self.stalls.run_probes(engine_call(self.http), lambda: self.models[0] if self.models else ""))
        if not s.served_models:
            await self.refresh_models()
            self.spawn(self._models_loop())

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        await self.kv_discovery.stop()
        await self.reloader.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for part in (self.subscriber, self.scraper):
            try:
                res = part.stop()
                if inspect.isawaitable(res):
                    await res
            except Exception:
                log.exception("stopping %s failed", type(part).__name__)
        self.http.close()
        await self.governance.gateway.close()
        if self._own_store is not None:
            await self._own_store.close()
