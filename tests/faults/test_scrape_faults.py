"""M2: one +Inf gauge no longer kills an endpoint's scraper. L5: metric values are clamped and a garbage /metrics
page is logged once, not on every scrape."""

from __future__ import annotations

import json
import time

import pytest

from tests.faults.procs import engine, fake, request, router, running, wait_for

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def _endpoint(r, url: str) -> dict:
    eps = json.loads(request(r.url + "/debug/endpoints")[1])["endpoints"]
    return next(e for e in eps if e["id"] == url)


def test_inf_gauge_does_not_kill_the_scraper(tmp_path):
    inf = fake(tmp_path, "inf-once")
    with running(inf):
        r = router(tmp_path, inf.url, "--scrape-idle-interval", "0.05")  # fixed-rate: the test counts polls
        with running(r):
            assert wait_for(lambda: not _endpoint(r, inf.url)["metrics"]["stale"])
            scrapes = json.loads(request(inf.url + "/scrapes")[1])
            assert wait_for(lambda: json.loads(request(inf.url + "/scrapes")[1]) > scrapes + 5)


def test_negative_waiting_is_clamped_and_does_not_draw_all_requests(tmp_path):
    neg, good = fake(tmp_path, "neg"), engine(tmp_path, "e0")
    with running(neg, good):
        r = router(tmp_path, f"{good.url},{neg.url}", "--config", "load-only")
        with running(r):
            assert wait_for(lambda: not _endpoint(r, neg.url)["metrics"]["stale"])
            assert _endpoint(r, neg.url)["metrics"]["waiting"] == 0
            targets = [request(r.url + "/v1/completions", {"prompt": f"q{i}", "max_tokens": 2})[2]["x-llmd-endpoint"]
                       for i in range(10)]
            assert targets.count(neg.url) < 10


def test_garbage_metrics_page_is_logged_once(tmp_path):
    garbage = fake(tmp_path, "garbage")
    with running(garbage):
        r = router(tmp_path, garbage.url, "--scrape-idle-interval", "0.05")  # fixed-rate: the test counts polls
        with running(r):
            assert wait_for(lambda: json.loads(request(garbage.url + "/scrapes")[1]) >= 20)
            time.sleep(0.2)
            warnings = [ln for ln in r.output().splitlines() if "scraping" in ln and "failed" in ln]
            assert len(warnings) == 1, warnings
