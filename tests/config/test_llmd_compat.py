"""llm-d v1.0 configs: the ``llm-d.ai/v1`` API version, llm-d's plugins with their documented defaults, files that
load unchanged, and errors that name the bad field."""

from __future__ import annotations

import pytest
import yaml

from llmd_kserve.builtin import REGISTRY
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import load_config, parse_config, read_text
from llmd_kserve.config.schema import API_VERSIONS
from llmd_kserve.config.validate import check
from llmd_kserve.errors import ConfigError
from tests.scheduling.sched_fixtures import BLOCK, endpoint, make_ctx, prompt, request

# Written from llm-d-router's plugin READMEs (prefix-cache-affinity-filter, inflight-load-producer,
# token-load-scorer and approx-prefix-cache-producer examples), as a user would combine them.
LLMD_V1 = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: approx-prefix-cache-producer
  parameters:
    autoTune: true
    lruCapacityPerServer: 1000
    maxPrefixTokensToMatch: 40960
- type: inflight-load-producer
  name: inflight-load
  parameters:
    addEstimatedOutputTokens: true
- type: prefix-cache-affinity-filter
  name: prefix-affinity
  parameters:
    affinityThreshold: 0.8
    explorationProbability: 0.01
    maxTTFTPenaltyMs: 5000
    ttftSource: prefillThroughput
    peakPrefillThroughput: 15926
    inFlightLoadProducerName: inflight-load
- type: token-load-scorer
  name: token-load
  parameters:
    queueThresholdTokens: 4194304
    inFlightLoadProducerName: inflight-load
- type: max-score-picker
  parameters:
    maxNumOfEndpoints: 1
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-affinity
  - pluginRef: token-load
    weight: 1
  - pluginRef: max-score-picker
"""


def test_llmd_v1_config_loads_unchanged_and_builds():
    cfg = read_text(LLMD_V1, "llmd.yaml")
    params = check(cfg)
    assert cfg.document() == yaml.safe_load(LLMD_V1)  # round trip: nothing added, renamed or dropped
    assert params[2].max_ttft_penalty_ms == 5000 and params[2].peak_prefill_throughput == 15926
    sched = build_scheduler(cfg, make_ctx())
    assert [p.name for p in sched.producers] == ["tokenize-producer", "approx-prefix-cache-producer", "inflight-load"]
    eps = [endpoint(i, block_size=BLOCK) for i in range(3)]
    first = sched.schedule(request("a", prompt(1, 700)), eps)
    assert first.scores["default/token-load"]  # llm-d's token load ranked the pool
    assert sched.schedule(request("b", prompt(1, 700)), eps).target == first.target  # then stuck to the holder


def test_shipped_llmd_optimized_baseline_has_llmds_defaults():
    cfg = load_config("llm-d-optimized-baseline")
    assert cfg.api_version == "llm-d.ai/v1"
    assert [p.type for p in cfg.plugins] == ["approx-prefix-cache-producer", "inflight-load-producer",
                                             "prefix-cache-affinity-filter", "token-load-scorer"]
    assert all(p.parameters is None for p in cfg.plugins)  # every plugin at llm-d's defaults
    defaults = {t: REGISTRY[t].params().model_dump(by_alias=True) for t in (p.type for p in cfg.plugins)}
    assert defaults["prefix-cache-affinity-filter"] == {
        "affinityThreshold": 0.8, "explorationProbability": 0.0, "maxTTFTPenaltyMs": 18000.0,
        "ttftSource": "prefillThroughput", "peakPrefillThroughput": 15928.0, "prefixMatchInfoProducerName": "",
        "latencyPredictionInfoProducerName": "", "inFlightLoadProducerName": ""}
    assert defaults["approx-prefix-cache-producer"] == {
        "autoTune": True, "blockSizeTokens": 16, "maxPrefixBlocksToMatch": 2048, "maxPrefixTokensToMatch": 131072,
        "lruCapacityPerServer": 31250, "blockSize": None}
    assert defaults["token-load-scorer"]["queueThresholdTokens"] == 4194304
    llmd = {k: v for k, v in defaults["inflight-load-producer"].items() if k not in ("requestTimeoutS", "scrapeLagS")}
    assert llmd == {"addEstimatedOutputTokens": False, "outputRatio": 1.5, "maxEstimatedOutputTokens": None,
                    "prefixMatchInfoProducerName": "", "syncCrossReplicaState": True}


@pytest.mark.parametrize("version", API_VERSIONS)
def test_every_api_version_of_the_same_schema(version):
    doc = yaml.safe_load(LLMD_V1)
    doc["apiVersion"] = version
    assert parse_config(doc).api_version == version


def _broken(edit) -> dict:
    doc = yaml.safe_load(LLMD_V1)
    edit(doc)
    return doc


@pytest.mark.parametrize(("edit", "path", "message"), [
    (lambda d: d.update(apiVersion="llm-d.ai/v2"), "apiVersion", "unknown apiVersion 'llm-d.ai/v2'"),
    (lambda d: d.update(featureGates=["flowControl"]), "featureGates", "llm-d's featureGates is not read here"),
    (lambda d: d.update(requestHandler={"parsers": []}), "requestHandler", "parses OpenAI requests itself"),
    (lambda d: d["plugins"][2]["parameters"].update(maxTokensInFlightPenalty=286720),
     "plugins[2].parameters.maxTokensInFlightPenalty", "Extra inputs"),
    (lambda d: d["plugins"].append({"type": "no-hit-lru-scorer"}), "plugins[5].type", "unknown plugin type"),
    (lambda d: d["plugins"][2]["parameters"].update(ttftSource="oracle"), "plugins[2].parameters.ttftSource",
     "prefillThroughput"),
    (lambda d: d["plugins"][2]["parameters"].update(affinityThreshold=1.5),
     "plugins[2].parameters.affinityThreshold", "less than or equal to 1"),
    (lambda d: d["plugins"][2]["parameters"].update(peakPrefillThroughput=0), "plugins[2].parameters",
     "peakPrefillThroughput must be > 0"),
    (lambda d: d["plugins"][2]["parameters"].update(inFlightLoadProducerName="nope"),
     "plugins[2].parameters.inFlightLoadProducerName", "'nope' is no plugin in plugins[]"),
    (lambda d: d["plugins"][2]["parameters"].update(prefixMatchInfoProducerName="token-load"),
     "plugins[2].parameters.prefixMatchInfoProducerName", "is a token-load-scorer"),
    (lambda d: d["plugins"][2]["parameters"].update(latencyPredictionInfoProducerName="predicted-latency-producer"),
     "plugins[2].parameters.latencyPredictionInfoProducerName", "predicted-latency-producer"),
    (lambda d: d["plugins"][1]["parameters"].update(outputRatio=-1), "plugins[1].parameters.outputRatio",
     "greater than or equal to 0"),
    (lambda d: d["plugins"][4]["parameters"].update(maxNumOfEndpoints=2), "plugins[4].parameters.maxNumOfEndpoints",
     "less than or equal to 1"),
    (lambda d: d["plugins"][3]["parameters"].update(queueThresholdTokens=-5),
     "plugins[3].parameters.queueThresholdTokens", "greater than or equal to 0"),
])
def test_bad_llmd_fields_are_named(edit, path, message):
    with pytest.raises(ConfigError) as err:
        parse_config(_broken(edit))
    assert err.value.path == path and message in str(err.value)


def test_peak_throughput_zero_is_fine_without_the_gate():
    doc = _broken(lambda d: d["plugins"][2]["parameters"].update(peakPrefillThroughput=0, maxTTFTPenaltyMs=0))
    parse_config(doc)


def test_filter_reads_the_named_prefix_producer():
    """Two llm-d prefix producers (as in llm-d's tiered example): the filter uses the one it names."""
    doc = {"apiVersion": "llm-d.ai/v1", "kind": "EndpointPickerConfig", "plugins": [
        {"type": "approx-prefix-cache-producer"},
        {"type": "approx-prefix-cache-producer", "name": "head", "parameters": {"maxPrefixTokensToMatch": 128}},
        {"type": "prefix-cache-affinity-filter", "name": "whole", "parameters": {"affinityThreshold": 1.0}},
        {"type": "prefix-cache-affinity-filter", "name": "start",
         "parameters": {"affinityThreshold": 1.0, "prefixMatchInfoProducerName": "head"}}],
        "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "whole"}]}]}
    eps = [endpoint(i, block_size=BLOCK) for i in range(3)]
    shared = prompt(1, 128)
    for ref, sticky in (("whole", False), ("start", True)):
        doc["schedulingProfiles"][0]["plugins"] = [{"pluginRef": ref}]
        sched = build_scheduler(parse_config(doc), make_ctx())
        holder = sched.schedule(request("a", shared + prompt(2, 512)), eps).target
        res = sched.schedule(request("b", shared + prompt(3, 512)), eps)  # shares only its first 128 tokens
        assert (set(res.totals) == {holder}) is sticky, ref
