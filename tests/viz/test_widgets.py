"""Panel logic without a browser: state changes, the refresh task's start/stop/cancel, errors as one line."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from fake_admin import FakeAdminRouter

from llmd_kserve.bench.workloads import SharedPrefixSpec
from llmd_kserve.config.loader import parse_config
from llmd_kserve.kube import FakeKubeApi
from llmd_kserve.viz.admin import ApplyError, config_document, push_config
from llmd_kserve.viz.data import EndpointSample, LiveSample, Quantiles
from llmd_kserve.viz.sources import SourceError
from llmd_kserve.viz.widgets import BenchPanel, LiveDashboard, StackPanel, TunePanel

SMALL = SharedPrefixSpec(num_groups=4, prompts_per_group=10, system_prompt_len=1000, question_len=32, output_len=8)


class FakeSource:
    """A live source that returns made-up samples, or fails while ``down`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.down: str | None = None

    def sample(self) -> LiveSample:
        self.calls += 1
        if self.down:
            raise SourceError(self.down)
        eps = (EndpointSample("http://e0", self.calls % 3, 1, 0.5), EndpointSample("http://e1", 0, 2, 0.25))
        return LiveSample(float(self.calls), 0.8, 0.75, 0.8, Quantiles(0.01, 0.02, 0.03), Quantiles(0.005, 0.006, 0.007),
                          Quantiles(0.1, 0.2, 0.3), 5.0, 100.0, eps)

    def since_start(self) -> LiveSample | None:
        return None


def _one_line(text: str) -> None:
    assert text and "\n" not in text and "Traceback" not in text


def test_dashboard_refresh_draws_inside_figure_widgets():
    src = FakeSource()
    dash = LiveDashboard(source=src, interval=0.5)
    assert not dash.running
    for _ in range(3):
        assert dash.refresh() is not None
    hit = dash.figures["hit_rate"]
    assert list(hit.data[0].y) == [0.8, 0.8, 0.8] and list(hit.data[1].y) == [0.75] * 3
    heat = dash.figures["endpoints"]
    assert list(heat.data[0].y) == ["http://e0", "http://e1"] and len(heat.data[0].x) == 3
    assert "hit rate 80.0%" in dash.numbers.value
    src.down = "Prometheus at http://127.0.0.1:9 is not answering (connection refused)"
    assert dash.refresh() is None
    assert dash.status.kind == "error" and dash.status.text == src.down
    assert len(dash.samples) == 3  # the figures keep their last good state


async def test_refresh_task_starts_ticks_and_cancels():
    src = FakeSource()
    dash = LiveDashboard(source=src, interval=0.2)
    dash.start()
    task = dash._task
    assert dash.running and dash.start_button.disabled and not dash.stop_button.disabled
    dash.start()  # idempotent: still one task
    assert dash._task is task
    for _ in range(200):  # bounded wait for three ticks
        if dash.refreshes >= 3:
            break
        await asyncio.sleep(0.05)
    assert dash.refreshes >= 3
    src.down = "router at 127.0.0.1:9 is not answering (connection refused)"
    for _ in range(200):
        if dash.errors:
            break
        await asyncio.sleep(0.05)
    assert dash.running and dash.status.kind == "error"  # a failing source does not end the task
    _one_line(dash.status.text)
    dash.stop()
    await asyncio.sleep(0)
    assert task.cancelled() or task.done()
    assert not dash.running and dash.stop_button.disabled and not dash.start_button.disabled
    await asyncio.sleep(0.1)  # a read already handed to a worker thread may still finish
    calls = src.calls
    await asyncio.sleep(0.5)
    assert src.calls == calls  # nothing refreshes after stop


async def test_settle_refreshes_until_two_quiet_windows():
    src = FakeSource()
    dash = LiveDashboard(source=src, interval=0.2)
    dash.start()
    quiet = LiveSample(0.0, None, None, None, Quantiles(), Quantiles(), Quantiles(), 0.0, 0.0)
    busy_left = [3]

    def sample() -> LiveSample:  # three busy windows, then nothing moves
        busy_left[0] -= 1
        return FakeSource.sample(src) if busy_left[0] >= 0 else quiet

    src.sample = sample  # type: ignore[method-assign]
    await dash.settle(quiet=2, timeout=10)
    assert not dash.running and dash.status.text.startswith("settled")
    assert [s.hit_rate_engines for s in list(dash.samples)[-2:]] == [None, None]


def test_dashboard_against_a_router_that_is_gone():
    dash = LiveDashboard(router_url="http://127.0.0.1:9", config="default")
    assert dash.refresh() is None
    assert dash.status.text.startswith("router at 127.0.0.1:9 is not answering")
    _one_line(dash.status.text)
    with pytest.raises(Exception, match="needs router_url"):
        LiveDashboard()


def test_tune_panel_sliders_apply_and_export(tmp_path):
    tune = TunePanel("default", router_url=None, workload=SMALL, rate=10, engines=2, auto=False)
    tune.set_weight("default/queue-scorer", 3.5)
    cfg = tune.config()
    weights = {r.plugin_ref: r.weight for r in cfg.scheduling_profiles[0].plugins}
    assert weights["queue-scorer"] == 3.5 and weights["precise-prefix-cache-scorer"] == 2
    assert tune.apply() is None and tune.status.text.startswith("no router to apply to")
    with pytest.raises(Exception, match="no scorer"):
        tune.set_weight("default/nope", 1)
    base, tuned = tune.simulate()
    assert base.n == tuned.n == 40 and tune.status.kind == "ok"
    assert [t.name for t in tune.ttft_figure.data] == ["p50", "p90", "p99"]
    assert list(tune.ttft_figure.data[1].y) == pytest.approx([base.ttft.p90 * 1000, tuned.ttft.p90 * 1000])
    cfg_path, cm_path = tune.export(tmp_path / "out")
    assert parse_config(yaml.safe_load(cfg_path.read_text())) == parse_config(config_document(cfg))
    cm = yaml.safe_load(cm_path.read_text())
    assert cm["kind"] == "ConfigMap" and parse_config(yaml.safe_load(cm["data"]["config.yaml"])).plugins == cfg.plugins


def test_tune_panel_pd_has_decider_and_split_sliders():
    tune = TunePanel("pd-uncached", workload=SMALL, rate=10, auto=False)
    assert tune.pd and "decider.threshold" in [w.description for w in tune.params.values()]
    tune.prefill.value, tune.decode.value = 1, 2
    assert tune.roles() == ("prefill", "decode", "decode")
    next(iter(tune.params.values())).value = 128
    assert tune.config().plugins[0].parameters["deciderParameters"]["threshold"] == 128


def test_apply_pushes_to_a_router_and_shows_refusals_in_one_line():
    with FakeAdminRouter(api_key="sekret") as router:
        tune = TunePanel("default", router_url=router.url, api_key="sekret", workload=SMALL, auto=False)
        tune.set_weight("default/queue-scorer", 4)
        answer = tune.apply()
        assert answer == {"status": "applied", "profiles": ["default"]}
        refs = router.applied[-1]["schedulingProfiles"][0]["plugins"]
        assert next(r for r in refs if r["pluginRef"] == "queue-scorer")["weight"] == 4
        assert tune.status.kind == "ok"
        tune.api_key = "wrong"
        assert tune.apply() is None and "HTTP 401" in tune.status.text
        _one_line(tune.status.text)
        with pytest.raises(ApplyError) as err:
            push_config(router.url, tune.config().model_copy(update={"scheduling_profiles": []}), "sekret")
        assert err.value.status == 400 and "schedulingProfiles" in str(err.value)
        _one_line(str(err.value))
    with pytest.raises(ApplyError, match="is not answering"):
        push_config("http://127.0.0.1:9", tune.config())


def test_stack_panel_kserve_with_and_without_a_cluster():
    panel = StackPanel(kube_mode="sim")
    assert panel.kube_deploy() is None
    assert panel.kube_line.text.startswith("deploy: no Kubernetes cluster configured")
    _one_line(panel.kube_line.text)
    fake = StackPanel(kube_api=FakeKubeApi(), kube_mode="pd")
    objs = fake.kube_render()
    assert {"ServingRuntime", "InferenceService", "InferenceGraph", "ConfigMap"} <= {o["kind"] for o in objs}
    st = fake.kube_deploy()
    assert st.ready and st.router_url and "ready" in fake.kube_line.text
    assert fake.kube_status().ready
    assert fake.kube_teardown() and not fake.kube_status().exists
    assert panel.attach("http://127.0.0.1:9").attached_url is None
    assert panel.status.text.startswith("router at 127.0.0.1:9 is not answering")


@pytest.mark.slow
def test_stack_panel_starts_shows_endpoints_and_stops():
    panel = StackPanel(engines=1, prometheus=False)
    panel.start()
    try:
        assert panel.status.kind == "ok", panel.status.text
        assert panel.router_url and panel.stack is not None and len(panel.engine_urls) == 1
        rows = panel.endpoint_rows()
        assert [r["endpoint"] for r in rows] == panel.engine_urls
        panel.start()
        assert panel.status.text.startswith("already running")
        # the real router's admin endpoint (config hot reload): applied, then a bad config refused by field path
        tune = TunePanel(panel.config_name, router_url=panel.router_url, workload=SMALL, auto=False)
        tune.set_weight("default/queue-scorer", 2.5)
        assert tune.apply()["status"] == "applied"
        with pytest.raises(ApplyError) as err:
            push_config(panel.router_url, tune.config().model_copy(update={"scheduling_profiles": []}))
        assert err.value.status == 400 and err.value.param == "schedulingProfiles"
        _one_line(str(err.value))
        bench = BenchPanel(panel, workload=SMALL, rates=(10,), num_requests=10, policies=(panel.config_name,))
        report = asyncio.run(bench.run())  # no kernel loop in this test: run the coroutine to completion
        assert report is not None and report["runs"][0]["summary"]["n"] == 10 and report["runs"][0]["scale"] == "live"
        assert bench.progress.value == bench.progress.max == 10  # one step per finished request
    finally:
        panel.stop()
    assert panel.stack is None and panel.router_url is None and not panel.start_button.disabled


async def test_bench_panel_sim_runs_side_by_side_and_errors():
    bench = BenchPanel(workload=SMALL, rates=(5, 20), num_requests=40, policies=("round-robin", "default"),
                       sim=True, sim_engines=2)
    report = await bench.run()
    assert report is not None and len(report["runs"]) == 4 and bench.progress.value == bench.progress.max == 160
    assert {r["policy"] for r in report["runs"]} == {"round-robin", "default"}
    ttft = bench.figures["ttft"]
    assert len(ttft.data) == 6 and list(ttft.data[0].x) == [5.0, 20.0]
    again = await bench.run(policies=["default"], rates=[10])
    assert again["runs"][0]["policy"] == "default #2" and len(bench.points()) == 5
    bench.rates.value = "5, fast"
    assert await bench.run() is None and bench.status.text.startswith("rates: rates must be numbers")
    live = BenchPanel(workload=SMALL, rates=(5,), policies=("default",))
    assert await live.run() is None and live.status.text.startswith("no router")
    _one_line(live.status.text)
