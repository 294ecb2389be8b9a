"""``StackPanel``: start/stop the local stack or attach to a router; endpoints and their health; KServe
render → deploy → status → teardown of a ``DeploymentSpec``.

    panel = StackPanel(engines=2)          # or StackPanel(prefill=1, decode=2), StackPanel(router_url="http://…")
    StackPanel(engine="vllm")              # real vLLM servers (llmd-kserve vllm install), the tiny model by default
    panel.start(); panel                   # buttons do the same; panel.router_url, panel.prometheus_url, panel.stack
    panel.kube_render(); panel.kube_deploy(); panel.kube_status(); panel.kube_teardown()

Outside a cluster, deploy/status/teardown say so in one line; ``kube_api=FakeKubeApi()`` plays a cluster (a fake:
nothing runs) and the panel shows a banner saying so.
"""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as W

from llmd_kserve.config.loader import shipped_configs
from llmd_kserve.errors import LlmdError
from llmd_kserve.stack import LocalStack, StackConfig, prometheus_available
from llmd_kserve.viz.sources.router import http_get
from llmd_kserve.viz.widgets._common import Panel, StatusLine, one_line


class StackPanel(Panel):
    """The local stack (or an attached router) and a KServe deployment, as one panel."""

    def __init__(self, engines: int = 2, prefill: int = 0, decode: int = 0, config: str = "default",
                 prometheus: bool | None = None, router_url: str | None = None, kube_api: Any = None,
                 kube_mode: str = "sim", engine: str = "sim", **stack_options: Any) -> None:
        self.stack: LocalStack | None = None
        self.attached_url: str | None = None
        self.stack_options = stack_options
        self.kube_api = kube_api
        self.kube_spec: Any = None
        self.status = StatusLine()
        self.kube_line = StatusLine()
        if engine not in ("sim", "vllm"):
            raise LlmdError(f"engine must be sim or vllm, got {engine!r}")
        self.engine = W.Dropdown(options=[("simulated", "sim"), ("vLLM", "vllm")], value=engine, description="engine",
                                 layout=_w(200))
        self.engines = W.BoundedIntText(value=engines, min=0, max=16, description="engines", layout=_w(160))
        self.prefill = W.BoundedIntText(value=prefill, min=0, max=8, description="prefill", layout=_w(160))
        self.decode = W.BoundedIntText(value=decode, min=0, max=8, description="decode", layout=_w(160))
        self.config = W.Dropdown(options=list(shipped_configs()), value=config, description="config", layout=_w(280))
        self.prometheus = W.Checkbox(value=prometheus_available() if prometheus is None else prometheus,
                                     description="Prometheus", disabled=not prometheus_available())
        self.start_button = W.Button(description="Start", icon="play", button_style="success")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.url = W.Text(value=router_url or "", placeholder="http://127.0.0.1:8080", description="router",
                          layout=_w(320))
        self.attach_button = W.Button(description="Attach", icon="link")
        self.refresh_button = W.Button(description="Endpoints", icon="refresh")
        self.endpoints = W.HTML()
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.attach_button.on_click(lambda _: self.attach())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.kube_mode = W.Dropdown(options=["sim", "aggregated", "pd"], value=kube_mode, description="mode",
                                    layout=_w(200))
        self.kube_buttons = {name: W.Button(description=name.capitalize()) for name in
                             ("render", "deploy", "status", "teardown")}
        for name, button in self.kube_buttons.items():
            button.on_click(lambda _, n=name: getattr(self, f"kube_{n}")())
        self.kube_out = W.HTML()
        banner = W.HTML("<b>Fake cluster API</b> (FakeKubeApi): objects are stored, nothing runs." if kube_api
                        is not None else "")
        local = W.VBox([W.HBox([self.engine, self.engines, self.prefill, self.decode]),
                        W.HBox([self.config, self.prometheus, self.start_button, self.stop_button]),
                        W.HBox([self.url, self.attach_button, self.refresh_button]), self.status.widget,
                        self.endpoints])
        kube = W.VBox([banner, W.HBox([self.kube_mode, *self.kube_buttons.values()]), self.kube_line.widget,
                       self.kube_out])
        self.widget = W.Tab(children=[local, kube], titles=("Local stack", "KServe"))
        if router_url:
            self.attach(router_url)

    # --- local stack ------------------------------------------------------------------------------------------------
    @property
    def router_url(self) -> str | None:
        return self.stack.router_url if self.stack is not None else self.attached_url

    @property
    def prometheus_url(self) -> str | None:
        return self.stack.prometheus_url if self.stack is not None else None

    @property
    def engine_urls(self) -> list[str]:
        return self.stack.engine_base_urls if self.stack is not None else []

    @property
    def config_name(self) -> str:
        """The scheduler config the router runs (P/D pools under ``default`` run ``pd-predicted-ttft``)."""
        pd = self.stack.settings.prefill if self.stack is not None else self.prefill.value
        return "pd-predicted-ttft" if pd and self.config.value == "default" else str(self.config.value)

    def settings(self) -> StackConfig:
        return StackConfig(engines=self.engines.value, prefill=self.prefill.value, decode=self.decode.value,
                           config=self.config.value, prometheus=bool(self.prometheus.value), engine=self.engine.value,
                           **self.stack_options)

    def start(self) -> StackPanel:
        """Start engines, router (and Prometheus); a failure is one line in the panel and leaves nothing running."""
        if self.stack is not None:
            self.status.show(f"already running at {self.stack.router_url}")
            return self
        self.status.show("starting vLLM engines (about a minute)…" if self.engine.value == "vllm" else "starting…")
        try:
            self.stack = LocalStack(self.settings()).start()
        except Exception as exc:  # noqa: BLE001 - one line in the panel
            self.stack = None
            self.status.error(exc)
            return self
        self.attached_url = None
        self.start_button.disabled, self.stop_button.disabled = True, False
        prom = f", Prometheus {self.stack.prometheus_url}" if self.stack.prometheus_url else ""
        kind = " vLLM" if self.engine.value == "vllm" else ""
        self.status.ok(f"router {self.stack.router_url} ({self.config.value}), "
                       f"{len(self.stack.engine_urls)}{kind} engines{prom}")
        self.refresh(keep_status=True)
        return self

    def stop(self) -> StackPanel:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
            self.status.show("stopped")
        self.endpoints.value = ""
        self.start_button.disabled, self.stop_button.disabled = False, True
        return self

    def restart_router(self, config: str) -> None:
        """Run another scheduler config on the running stack (engines keep running)."""
        if self.stack is None:
            raise LlmdError("no local stack is running")
        self.stack.restart_router(config)
        self.config.value = config

    def attach(self, url: str | None = None) -> StackPanel:
        """Use an existing router instead of a local stack."""
        url = (url or self.url.value).strip().rstrip("/")
        self.url.value = url
        try:
            http_get(url + "/health", 3.0, "router")
        except Exception as exc:  # noqa: BLE001
            self.status.error(exc)
            return self
        self.attached_url = url
        self.status.ok(f"attached to router {url}")
        self.refresh(keep_status=True)
        return self

    def endpoint_rows(self) -> list[dict[str, Any]]:
        """``/debug/endpoints`` of the current router: id, role, health and load per endpoint."""
        if not self.router_url:
            raise LlmdError("no router: start the stack or attach to a router URL")
        data = json.loads(http_get(self.router_url + "/debug/endpoints", 3.0, "router"))
        rows = []
        for ep in data.get("endpoints", []):
            m = ep.get("metrics", {})
            rows.append({"endpoint": ep["id"], "role": ep.get("role", "both"),
                         "healthy": not m.get("stale", True), "waiting": m.get("waiting", 0),
                         "running": m.get("running", 0), "kv_usage": m.get("kv_usage", 0.0)})
        return rows

    def refresh(self, keep_status: bool = False) -> list[dict[str, Any]]:
        try:
            rows = self.endpoint_rows()
        except Exception as exc:  # noqa: BLE001
            self.status.error(exc)
            return []
        self.endpoints.value = _table(rows)
        if not keep_status:
            self.status.ok(f"{sum(r['healthy'] for r in rows)} of {len(rows)} endpoints healthy")
        return rows

    # --- KServe -------------------------------------------------------------------------------------------------------
    def _spec(self) -> Any:
        from llmd_kserve.kube import DeploymentSpec

        if self.kube_spec is None or self.kube_spec.mode != self.kube_mode.value:
            self.kube_spec = DeploymentSpec(mode=self.kube_mode.value)
        return self.kube_spec

    def _apis(self) -> Any:
        from llmd_kserve.kube import KubeApis

        return self.kube_api.apis() if self.kube_api is not None else KubeApis.load()

    def _kube(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - e.g. "no Kubernetes cluster configured (...)"
            self.kube_line.error(f"{what}: {one_line(exc)}")
            return None

    def kube_render(self) -> list[dict[str, Any]] | None:
        """The Kubernetes objects of the spec (no cluster needed)."""
        from llmd_kserve.kube.render import render

        objs = self._kube("render", lambda: render(self._spec()))
        if objs is not None:
            self.kube_out.value = _table([{"kind": o["kind"], "name": o["metadata"]["name"]} for o in objs])
            self.kube_line.ok(f"rendered {len(objs)} objects for mode {self._spec().mode}")
        return objs

    def kube_deploy(self, wait: bool = True, timeout: float = 60.0) -> Any:
        from llmd_kserve.kube import deploy

        st = self._kube("deploy", lambda: deploy(self._spec(), apis=self._apis(), wait=wait, timeout=timeout,
                                                 poll=0.05 if self.kube_api is not None else 5.0))
        return self._show_status(st)

    def kube_status(self) -> Any:
        from llmd_kserve.kube import status

        spec = self._spec()
        return self._show_status(self._kube("status", lambda: status(spec.name, spec.namespace, apis=self._apis())))

    def kube_teardown(self) -> list[str] | None:
        from llmd_kserve.kube import teardown

        spec = self._spec()
        gone = self._kube("teardown", lambda: teardown(spec.name, spec.namespace, apis=self._apis()))
        if gone is not None:
            self.kube_line.ok(f"deleted {len(gone)} objects")
            self.kube_out.value = ""
        return gone

    def _show_status(self, st: Any) -> Any:
        if st is not None:
            self.kube_out.value = _table([{"kind": o.kind, "name": o.name, "ready": o.ready, "url": o.url or ""}
                                          for o in st.objects])
            state = "ready" if st.ready else ("not deployed" if not st.exists else "not ready")
            self.kube_line.ok(f"{st.name}: {state}" + (f"; router {st.router_url}" if st.router_url else ""))
        return st


def _w(px: int) -> W.Layout:
    return W.Layout(width=f"{px}px")


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<i>none</i>"
    head = "".join(f"<th style='padding:2px 8px'>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(_cell(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f"<table>{head and '<tr>' + head + '</tr>'}{body}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return "" if v is None else str(v)
