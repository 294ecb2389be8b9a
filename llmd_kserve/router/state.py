"""The router's running parts wired together: pool, scraper, KV index + subscriber, scheduler, proxy, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from llmd_kserve.defaults import BLOCK_SIZE, DEFAULT_CONFIG, DEFAULT_PROFILE, MAX_PROMPT_CHARS, SCRAPE_INTERVAL_S
from llmd_kserve.errors import ConfigError
from llmd_kserve.governance.build import build_gateway
from llmd_kserve.governance.gateway import Gateway
from llmd_kserve.metrics.collectors import RouterStatsCollector
from llmd_kserve.metrics.router_metrics import RouterMetrics
from llmd_kserve.router.decisions import DecisionLog
from llmd_kserve.router.endpoints import (
    EndpointPool,
    EndpointsFileWatcher,
    KVEventSourceDiscovery,
    parse_endpoints,
)
from llmd_kserve.router.governance import AuditMode, BearerTokenAuth, Governance, Limits
from llmd_kserve.router.outliers import EjectionPolicy, OutlierEjector
from llmd_kserve.router.proxy import Proxy
from llmd_kserve.router.reload import ConfigReloader, ReloadableScheduler, reload_counter
from llmd_kserve.router.render import RenderTokenizer
from llmd_kserve.router.timeouts import UpstreamTimeouts
from llmd_kserve.types import Endpoint, EndpointMetrics, EndpointState

if TYPE_CHECKING:
    from llmd_kserve.kvcache.block_sizes import EngineBlockSizes
    from llmd_kserve.kvcache.index import KVIndex
    from llmd_kserve.kvcache.subscriber import KVEventSubscriber
    from llmd_kserve.metrics.scraper import MetricsScraper

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder().decode
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def _streams_kv_events(endpoint: Endpoint) -> bool:
    """The router hears an endpoint's KV events only through the ZMQ stream it was given (``#kv=``)."""
    return endpoint.kv_events is not None


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Everything ``llmd-kserve router`` can be told (besides its endpoints)."""

    config: str | Path = DEFAULT_CONFIG
    """Shipped scheduler config name or an EndpointPickerConfig YAML file."""
    scrape_interval: float = SCRAPE_INTERVAL_S
    scrape_idle_interval: float | None = 5.0
    """Seconds between /metrics polls of an endpoint with no request on it for 1 s (None: none while idle; the
    first request after an idle spell scrapes first). ``scrape_interval`` or less: fixed-rate polling."""
    scrape_max_rate: float | None = 400.0
    """At most this many /metrics polls per second over all active endpoints (their interval stretches)."""
    tokenizer: str | None = None
    """``None``/``"sim"``: local SimTokenizer; ``"render"``: the engines' ``/render`` endpoints (else their
    ``/tokenize``); else a model directory or its ``tokenizer.json`` (the model's own ids and chat template)."""
    seed: int = 0
    profile: str = DEFAULT_PROFILE
    """Latency profile the predicted-TTFT scorer uses."""
    block_size: int | None = None
    """KV block size of every endpoint; None: each engine's own (its KV events', else its ``cache_config_info``)."""
    kv_index_max_keys: int = 4_000_000
    max_attempts: int = 3
    """Upstream attempts per request (1 + retries on other endpoints when an upstream fails before the first byte)."""
    api_keys: tuple[str, ...] = ()
    """Plain bearer tokens (``--api-keys-file``): operator keys, accepted on every route (tenants get virtual keys)."""
    audit: AuditMode = "off"
    max_prompt_chars: int | None = MAX_PROMPT_CHARS
    """Characters of every string the engine renders (None: no limit)."""
    served_models: tuple[str, ...] = ()
    """Model names to accept and list; empty: whatever the endpoints' ``/v1/models`` say (any, until known)."""
    decisions_size: int = 256
    endpoints_poll_interval: float = 1.0
    models_refresh_interval: float = 10.0
    connect_timeout: float = 5.0
    first_byte_timeout: float = 120.0
    """Seconds until an upstream's response headers (and a stream's first event); then retry elsewhere."""
    idle_timeout: float = 60.0
    """Seconds an upstream may send nothing in the middle of a response body."""
    eject_s: float = 5.0
    """First ejection of an endpoint that timed out or failed to connect (doubles while it keeps failing)."""
    header_timeout: float = 15.0
    """Seconds a client connection may take to send a request's headers (and may stay idle between requests)."""
    body_timeout: float = 30.0
    """Seconds a client may take to send a request's body."""
    drain_timeout: float = 10.0
    """On SIGINT/SIGTERM, seconds in-flight requests may still take (a second signal exits at once)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_prompt_tokens: int | None = 131_072
    max_batch_size: int | None = 256
    audit_salt: str | None = None
    """Key of the audit log's prompt HMAC (hashes then correlate across restarts); None: random per process."""
    inject_stream_usage: bool = True
    admin: bool = False
    """Serve ``GET/POST /admin/config`` (config hot reload): an operator key when keys are configured (a virtual key
    with ``admin: true`` or an ``api_keys`` token), else loopback clients only."""
    config_poll_interval: float = 1.0
    """Seconds between checks of a ``config`` file for changes (reloaded without a restart)."""
    # --- governance (issue 14; llmd_kserve.governance) ---
    keys_file: str | None = None
    """YAML file of virtual keys (``llmd-kserve keys``), reloaded on change; with ``api_keys``, both are accepted."""
    guardrails_file: str | None = None
    audit_file: str | None = None
    """Hash-chained JSONL audit trail (``audit`` hash|full says what of prompts/answers it holds; off means hash)."""
    audit_fsync: str = "every"
    audit_fsync_interval: float = 1.0
    audit_max_bytes: int | None = None
    audit_max_age_s: float | None = None
    audit_chain_key: bytes | None = None
    """Key of the audit chain's HMAC (``audit verify`` needs it too); None: the chain is plain SHA-256."""
    flow_per_endpoint: int | None = None
    """Flow control: requests in flight per endpoint before the rest queue by priority and tenant (None: off)."""
    flow_band_capacity: int = 1024
    flow_ttl_s: float = 30.0
    flow_headroom: int = 1
    """Flow-control slots only a tenant with none in flight may take (a flooding tenant leaves them free)."""

    def __post_init__(self) -> None:
        for name in ("scrape_interval", "endpoints_poll_interval", "models_refresh_interval", "connect_timeout",
                     "first_byte_timeout", "idle_timeout", "eject_s", "header_timeout", "body_timeout",
                     "drain_timeout", "config_poll_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0, got {getattr(self, name)}", name)
        for name in ("max_attempts", "block_size", "kv_index_max_keys", "decisions_size", "max_prompt_chars",
                     "max_body_bytes", "max_prompt_tokens", "max_batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"must be >= 1, got {v}", name)
        for name in ("scrape_idle_interval", "scrape_max_rate"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0 (or unset), got {getattr(self, name)}", name)
        if self.audit not in ("off", "hash", "full"):
            raise ConfigError(f"must be off, hash or full, got {self.audit!r}", "audit")


def _scraper(s: RouterSettings, adaptive: bool) -> MetricsScraper:
    from llmd_kserve.metrics.scraper import MetricsScraper

    if not adaptive or (s.scrape_idle_interval is not None and s.scrape_idle_interval <= s.scrape_interval):
        return MetricsScraper(interval=s.scrape_interval)
    return MetricsScraper(interval=s.scrape_interval, idle_interval=s.scrape_idle_interval,
                          max_rate=s.scrape_max_rate)


class _KeyStoreAuth:
    """``AuthHook`` over the gateway's key store (virtual keys and plain tokens); the principal is the key id."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def check(self, headers: Mapping[str, str]) -> str | None:
        key = self.gateway.authenticate(headers)
        return key.id if key is not None else None


def gateway_of(s: RouterSettings, registry: Any = None, pool_size: Callable[[], int] = lambda: 1) -> Gateway:
    """The settings' virtual keys, guardrails, flow control and audit trail."""
    per = s.flow_per_endpoint
    return build_gateway(
        keys_file=s.keys_file, legacy_keys=s.api_keys, guardrails_file=s.guardrails_file, audit_file=s.audit_file,
        audit_content="full" if s.audit == "full" else "hash", audit_fsync=s.audit_fsync,
        audit_fsync_interval=s.audit_fsync_interval, audit_max_bytes=s.audit_max_bytes,
        audit_max_age_s=s.audit_max_age_s, flow_band_capacity=s.flow_band_capacity, flow_ttl_s=s.flow_ttl_s,
        flow_headroom=s.flow_headroom,
        flow_capacity=(lambda: per * max(1, pool_size())) if per else None,
        salt=s.audit_salt.encode() if s.audit_salt else None, registry=registry, audit_chain_key=s.audit_chain_key)


def governance_of(s: RouterSettings, gateway: Gateway | None = None) -> Governance:
    """The settings' auth, limits and (logger) audit trail."""
    limits = Limits(s.max_prompt_chars, s.max_prompt_tokens, s.max_batch_size)
    if gateway is not None and gateway.keys is not None and gateway.keys.enabled:
        auth: Any = _KeyStoreAuth(gateway)
    else:
        auth = BearerTokenAuth(s.api_keys) if s.api_keys else None
    if s.audit_file:  # the JSONL trail replaces the logger lines
        s = replace(s, audit="off")
    if s.audit_salt:
        return Governance(auth, limits, s.audit, s.audit_salt.encode())
    return Governance(auth, limits, s.audit)


@dataclass(slots=True)
class RouterState:
    """Mutable runtime holder of one router; ``start``/``stop`` are driven by the aiohttp app's lifecycle."""

    settings: RouterSettings
    pool: EndpointPool
    scheduler: ReloadableScheduler
    scraper: MetricsScraper | None
    index: KVIndex | None = None
    subscriber: KVEventSubscriber | None = None
    endpoints_file: Path | None = None
    metrics: RouterMetrics = field(default_factory=RouterMetrics)
    decisions: DecisionLog = field(default_factory=DecisionLog)
    governance: Governance = field(default_factory=Governance)
    gateway: Gateway = field(default_factory=Gateway)
    models: tuple[str, ...] = ()
    model_cards: tuple[dict[str, Any], ...] = ()
    session: aiohttp.ClientSession | None = None
    proxy: Proxy | None = None
    render: RenderTokenizer | None = None
    tokenizer: Any = None
    """The router's local tokenizer (None: the engines render), for the prompt-token limit."""
    outliers: OutlierEjector = field(default_factory=OutlierEjector)
    reloader: ConfigReloader | None = None
    block_sizes: EngineBlockSizes | None = None
    """Each endpoint's KV block size as the scheduler keys its prompts (``describe`` for a debug page)."""
    kv_discovery: KVEventSourceDiscovery | None = None
    _watcher: EndpointsFileWatcher | None = None
    _warned_blind: frozenset[str] = frozenset()
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @classmethod
    def create(cls, settings: RouterSettings | None = None, endpoints: Sequence[str | Endpoint] = (),
               endpoints_file: str | Path | None = None, *, adaptive_scrape: bool = True) -> RouterState:
        """Build the real parts (scheduler from config, KV index, subscriber, scraper); nothing runs until ``start``.

        ``adaptive_scrape``: poll endpoints by the proxy's activity (``scrape_idle_interval``); a front end that
        does not proxy through ``self.proxy`` (the EPP) passes False and keeps fixed-rate polling."""
        from llmd_kserve.config.build import build_scheduler
        from llmd_kserve.config.loader import shipped_configs
        from llmd_kserve.kvcache.block_sizes import EngineBlockSizes
        from llmd_kserve.kvcache.index import KVIndex
        from llmd_kserve.kvcache.subscriber import KVEventSubscriber
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
                            has_kv_events=_streams_kv_events)
        scheduler = ReloadableScheduler(build_scheduler(s.config, ctx))
        metrics = RouterMetrics()
        watch = None if str(s.config) in shipped_configs() or not Path(s.config).is_file() else s.config
        reloader = ConfigReloader(scheduler, str(s.config), watch, s.config_poll_interval,
                                  reload_counter(metrics.registry))
        eps = [e for e in endpoints if isinstance(e, Endpoint)]
        eps += parse_endpoints([e for e in endpoints if not isinstance(e, Endpoint)])
        state = cls(settings=s, pool=EndpointPool(eps), scheduler=scheduler, metrics=metrics, reloader=reloader,
                   tokenizer=ctx.tokenizer if s.tokenizer != "render" else None,
                   scraper=_scraper(s, adaptive_scrape), index=index,
                   subscriber=KVEventSubscriber(index), endpoints_file=Path(endpoints_file) if endpoints_file else None,
                   decisions=DecisionLog(s.decisions_size),
                   outliers=OutlierEjector(EjectionPolicy(base_ejection_s=s.eject_s)),
                   models=tuple(s.served_models), block_sizes=block_sizes)
        state.gateway = gateway_of(s, metrics.registry, lambda: len(state.pool.snapshot))
        state.gateway.detokenize = state.tokenizer.decode if isinstance(state.tokenizer, HFTokenizer) else None
        state.governance = governance_of(s, state.gateway)
        reloader.audit = state.gateway.audit_admin  # config changes go to the audit trail with who made them
        subscriber, scraper = state.subscriber, state.scraper
        assert subscriber is not None and scraper is not None
        state.metrics.registry.register(RouterStatsCollector(
            subscriber.stats, scraper.stats, lambda: state.outliers.ejected_now()))
        return state

    # --- what handlers use ----------------------------------------------------------------------------------------
    def endpoint_states(self) -> list[EndpointState]:
        get = self.scraper.get if self.scraper is not None else None
        return [EndpointState(e, get(e.id) if get else EndpointMetrics(stale=False)) for e in self.pool.snapshot]

    def set_endpoints(self, endpoints: Sequence[str | Endpoint]) -> bool:
        """Replace the endpoint pool programmatically (Kubernetes discovery calls this)."""
        eps = [e for e in endpoints if isinstance(e, Endpoint)]
        eps += parse_endpoints([e for e in endpoints if not isinstance(e, Endpoint)])
        return self.pool.set_endpoints(eps)

    def routes_on_kv_events(self) -> bool:
        """Whether the scheduler (as configured now) routes on the KV-event index (precise prefix)."""
        producers = getattr(self.scheduler, "producers", ())
        return any(getattr(p, "type", None) == "precise-prefix-producer" for p in producers)

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

    def _live_session(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("the router is not started")
        return self.session

    def _pick_render_endpoint(self) -> str | None:
        states = self.endpoint_states()
        fresh = [s for s in states if not s.metrics.stale]
        return (fresh or states)[0].id if states else None

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def _spawn(self, result: Any) -> None:
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _on_pool_change(self, old: tuple[Endpoint, ...], new: tuple[Endpoint, ...]) -> None:
        if self.scraper is not None:
            self.scraper.set_endpoints(new)
        if self.subscriber is not None:
            self.subscriber.set_endpoints(new)
        self._warn_kv_blind()
        if self.gateway.flow is not None:
            self.gateway.flow.kick()  # capacity follows the pool size
        new_ids = {e.id for e in new}
        for e in old:
            if e.id not in new_ids:
                if self.block_sizes is not None:
                    self.block_sizes.forget(e.id)
                self.scheduler.remove_endpoint(e.id)
                self.outliers.forget(e.id)
                if self.index is not None:
                    self.index.remove_endpoint(e.id)
        if old and not self.settings.served_models:
            self._spawn(self.refresh_models())

    async def refresh_models(self) -> None:
        """Union of the endpoints' ``/v1/models`` (kept as it was when no endpoint answers)."""
        if self.session is None or self.settings.served_models:
            return
        timeout = aiohttp.ClientTimeout(total=2.0)

        async def one(base: str) -> list[dict[str, Any]]:
            async with self._live_session().get(f"{base}/v1/models", timeout=timeout) as r:
                return list(_decode(await r.read()).get("data", [])) if r.status == 200 else []

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
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("Accept-Encoding", "User-Agent"),
            cookie_jar=aiohttp.DummyCookieJar(),  # a proxy: an engine's cookies are its client's, never shared
            timeout=aiohttp.ClientTimeout(total=None, connect=s.connect_timeout, sock_connect=s.connect_timeout),
            auto_decompress=False)
        profile = self.scheduler.ctx.profile  # the latency model, if any
        self.proxy = Proxy(self.scheduler, self.endpoint_states, self.metrics, self.decisions, self._live_session,
                           max_attempts=s.max_attempts, forward_authorization=not s.api_keys,
                           inject_stream_usage=s.inject_stream_usage, outliers=self.outliers,
                           timeouts=UpstreamTimeouts(s.connect_timeout, s.first_byte_timeout, s.idle_timeout),
                           kv_transfer_time=profile.kv_transfer_time if profile is not None else None,
                           activity=self.scraper if self.scraper is not None and self.scraper.adaptive else None)
        if self.gateway.active:
            self.proxy.observer = self.gateway
        if s.tokenizer == "render":
            self.render = RenderTokenizer(self._live_session, self._pick_render_endpoint)
        if self.endpoints_file is not None:
            self._watcher = EndpointsFileWatcher(self.endpoints_file, self.pool, s.endpoints_poll_interval)
            self._watcher.load_now()
        for part in (self.scraper, self.subscriber):
            if part is not None:
                res = part.start()
                if inspect.isawaitable(res):
                    await res
        self.kv_discovery = KVEventSourceDiscovery(self.pool, self._live_session, self.routes_on_kv_events)
        with contextlib.suppress(TimeoutError):  # engines up now: subscribed from the start, not warned about
            async with asyncio.timeout(1.0):
                await self.kv_discovery.discover_once()
        self.kv_discovery.start()
        self.pool.subscribe(self._on_pool_change)
        self._on_pool_change((), self.pool.snapshot)
        if self._watcher is not None:
            self._watcher.start()
        if self.reloader is not None:
            self.reloader.start()
        if not s.served_models:
            await self.refresh_models()
            self._spawn(self._models_loop())

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        if self.kv_discovery is not None:
            await self.kv_discovery.stop()
        if self.reloader is not None:
            await self.reloader.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for part in (self.subscriber, self.scraper):
            if part is None:
                continue
            try:
                res = part.stop()
                if inspect.isawaitable(res):
                    await res
            except Exception:
                log.exception("stopping %s failed", type(part).__name__)
        if self.proxy is not None:
            self.proxy.http.close()
        if self.session is not None:
            await self.session.close()
        if self.gateway.trail is not None:
            await self.gateway.trail.close()
