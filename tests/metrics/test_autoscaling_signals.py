"""The TTFT headroom meter (window mean, idle and busy without decisions) and the queue-depth collector's bands."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from llmd_kserve.metrics.autoscaling import AutoscalingCollector, HeadroomMeter
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_headroom_is_the_window_mean_then_the_last_value_while_busy_then_the_target_when_idle():
    clock = FakeClock()
    meter = HeadroomMeter(0.5, window_s=10, clock=clock)
    assert meter.value(busy=False) == 0.5
    meter.observe(0.3)
    clock.t += 1
    meter.observe(-0.9)
    assert meter.value(busy=True) == (0.3 - 0.9) / 2
    clock.t += 5
    meter.observe(-1.5)
    assert abs(meter.value(busy=True) - (0.3 - 0.9 - 1.5) / 3) < 1e-9
    clock.t += 12  # all out of the window
    assert meter.value(busy=True) == -1.5
    assert meter.value(busy=False) == 0.5


def test_queue_bands_seen_stay_exported_at_zero_and_kv_usage_is_the_mean_of_ready_endpoints():
    depth = {"3": 4}
    states = [EndpointState(Endpoint(EndpointId(f"http://{i}"), role=role), EndpointMetrics(kv_usage=kv, stale=stale))
              for i, (role, kv, stale) in enumerate([("prefill", 0.2, False), ("decode", 0.6, False),
                                                     ("decode", 0.9, True)])]
    reg = CollectorRegistry()
    reg.register(AutoscalingCollector(lambda: depth, lambda: states, lambda s: not s.metrics.stale, lambda: 0))
    text = generate_latest(reg).decode()
    assert 'llmd_router_queue_depth{band="3"} 4.0' in text and 'llmd_router_queue_depth{band="0"} 0.0' in text
    assert 'llmd_router_kv_usage_ratio{role="decode"} 0.6' in text  # the stale one is not ready
    assert 'llmd_router_endpoints_ready{role="decode"} 1.0' in text
    assert 'llmd_router_endpoints{role="decode"} 2.0' in text
    assert "ttft_headroom" not in text  # no target
    assert "inference_pool" not in text  # no pool name
    depth.clear()
    assert 'llmd_router_queue_depth{band="3"} 0.0' in generate_latest(reg).decode()


def test_llm_d_pool_gauges_average_the_ready_endpoints():
    states = [EndpointState(Endpoint(EndpointId(f"http://{i}")), EndpointMetrics(kv_usage=kv, waiting=w, running=r,
                                                                                  stale=stale))
              for i, (kv, w, r, stale) in enumerate([(0.2, 2, 4, False), (0.4, 4, 6, False), (0.9, 9, 9, True)])]
    reg = CollectorRegistry()
    reg.register(AutoscalingCollector(dict, lambda: states, lambda s: not s.metrics.stale, lambda: 0,
                                      pool_name="llmd-pool"))
    text = generate_latest(reg).decode()
    for line in ('inference_pool_ready_pods{name="llmd-pool"} 2.0',
                 'inference_pool_average_queue_size{name="llmd-pool"} 3.0',
                 'inference_pool_average_running_requests{name="llmd-pool"} 5.0'):
        assert line in text
    assert 'inference_pool_average_kv_cache_utilization{name="llmd-pool"} 0.3' in text
