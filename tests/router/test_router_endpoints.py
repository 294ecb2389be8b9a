"""Endpoint URL/file parsing, the immutable pool, and the endpoints-file watcher."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmd_kserve.control.endpoints import (
    EndpointPool,
    EndpointsFileWatcher,
    load_endpoints_file,
    parse_endpoint_url,
    parse_endpoints,
)
from llmd_kserve.errors import ConfigError
from llmd_kserve.types import Endpoint


def test_url_with_fragment_sets_role_and_kv_events():
    ep = parse_endpoint_url("http://10.0.0.5:8000/#role=prefill&kv=tcp://10.0.0.5:5557")
    assert ep == Endpoint(id="http://10.0.0.5:8000", role="prefill", kv_events="tcp://10.0.0.5:5557")
    assert parse_endpoint_url("http://h:1") == Endpoint(id="http://h:1")


@pytest.mark.parametrize("url, fragment", [("ftp://h:1", "http"), ("http://h:1#role=boss", "role"),
                                           ("http://h:1#colour=red", "unknown")])
def test_bad_urls_raise_config_error_with_path(url, fragment):
    with pytest.raises(ConfigError, match=fragment) as exc:
        parse_endpoints([url])
    assert exc.value.path.startswith("endpoints[0]")


def test_duplicates_rejected():
    with pytest.raises(ConfigError, match="duplicate") as exc:
        parse_endpoints(["http://h:1", "http://h:1/"])
    assert exc.value.path == "endpoints[1]"


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "eps.yaml"
    y.write_text("- url: http://a:1\n  role: decode\n  kv_events: tcp://a:5557\n- http://b:2#role=prefill\n")
    assert load_endpoints_file(y) == (Endpoint(id="http://a:1", role="decode", kv_events="tcp://a:5557"),
                                      Endpoint(id="http://b:2", role="prefill"))
    j = tmp_path / "eps.json"
    j.write_text(json.dumps({"endpoints": [{"url": "http://c:3", "labels": {"zone": "a"}}]}))
    assert load_endpoints_file(j) == (Endpoint(id="http://c:3", labels={"zone": "a"}),)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- url: http://a:1\n  weight: 3\n")
    with pytest.raises(ConfigError, match="weight") as exc:
        load_endpoints_file(bad)
    assert exc.value.path.endswith("endpoints[0]")


def test_pool_replaces_snapshot_and_notifies():
    pool = EndpointPool(parse_endpoints(["http://a:1"]))
    seen = []
    pool.subscribe(lambda old, new: seen.append(([e.id for e in old], [e.id for e in new])))
    before = pool.snapshot
    assert pool.set_endpoints(parse_endpoints(["http://a:1", "http://b:2"]))
    assert not pool.set_endpoints(parse_endpoints(["http://a:1", "http://b:2"]))
    assert before == (Endpoint(id="http://a:1"),)  # old snapshots are never mutated
    assert seen == [(["http://a:1"], ["http://a:1", "http://b:2"])]


async def test_watcher_picks_up_changes_and_keeps_pool_on_bad_edit(tmp_path):
    f = tmp_path / "eps.yaml"
    f.write_text("- http://a:1\n")
    pool = EndpointPool()
    watcher = EndpointsFileWatcher(f, pool, interval=0.02)
    assert watcher.load_now()
    watcher.start()
    try:
        f.write_text("- http://a:1\n- http://b:2#role=decode\n")
        for _ in range(200):
            if len(pool.snapshot) == 2:
                break
            await asyncio.sleep(0.01)
        assert [e.id for e in pool.snapshot] == ["http://a:1", "http://b:2"]
        f.write_text("- url: [not, a, url\n")  # invalid YAML: ignored, the pool stays
        await asyncio.sleep(0.1)
        assert len(pool.snapshot) == 2
    finally:
        await watcher.stop()
