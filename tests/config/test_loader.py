"""Loading scheduler configs: shipped names, files, and errors that name the bad field."""

from __future__ import annotations

import pytest
import yaml

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import PD_SHIPPED, SHIPPED, load_config, parse_config, shipped_configs
from llmd_kserve.config.schema import API_VERSION, SchedulerConfig
from llmd_kserve.errors import ConfigError
from tests.scheduling.sched_fixtures import make_ctx

GOOD = {
    "apiVersion": API_VERSION,
    "kind": "EndpointPickerConfig",
    "plugins": [
        {"type": "decode-filter"},
        {"type": "queue-scorer"},
        {"type": "prefix-affinity-filter", "name": "sticky", "parameters": {"threshold": 0.7}},
        {"type": "max-score-picker"},
    ],
    "schedulingProfiles": [
        {"name": "default", "plugins": [
            {"pluginRef": "decode-filter"},
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "sticky"},
            {"pluginRef": "max-score-picker"},
        ]},
    ],
}


def broken(edit) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(GOOD))
    edit(cfg)
    return cfg


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_configs_load_and_build(name, index):
    cfg = load_config(name)
    assert isinstance(cfg, SchedulerConfig) and cfg.kind == "EndpointPickerConfig" and cfg.source == name
    sched = build_scheduler(name, make_ctx(index))
    assert sched.profile_names == (("decode", "prefill") if name in PD_SHIPPED else ("default",))


def test_shipped_configs_list_the_pd_ones_too():
    assert set(shipped_configs()) == set(SHIPPED) | set(PD_SHIPPED)
    assert {"default", "load-only", "pd-predicted-ttft", "pd-never"} <= set(shipped_configs())


def test_precise_prefix_is_llm_ds_blend():
    cfg = load_config("precise-prefix")
    weights = {r.plugin_ref: r.weight for r in cfg.scheduling_profiles[0].plugins if r.weight is not None}
    assert weights == {"precise-prefix-cache-scorer": 3, "queue-scorer": 2, "kv-cache-utilization-scorer": 2}


def test_good_config_and_file_path(tmp_path):
    cfg = parse_config(GOOD)
    assert cfg.plugins[2].ref == "sticky"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert load_config(path).plugins == cfg.plugins
    assert load_config(str(path)).source == str(path)


def test_snake_case_parameters_accepted():
    cfg = broken(lambda c: c["plugins"][2].update(parameters={"ttft_margin": 1.0, "minMarginS": 0.1}))
    parse_config(cfg)


@pytest.mark.parametrize(
    ("edit", "path", "message"),
    [
        (lambda c: c["plugins"][1].update(type="no-such-scorer"), "plugins[1].type", "unknown plugin type"),
        (lambda c: c["plugins"][2]["parameters"].update(threshold=2), "plugins[2].parameters.threshold", "less than"),
        (lambda c: c["plugins"][2]["parameters"].update(threshhold=0.5), "plugins[2].parameters.threshhold", "Extra"),
        (lambda c: c["plugins"][2].update(parameters={"threshold": "high"}), "plugins[2].parameters.threshold",
         "number"),
        (lambda c: c["plugins"][2].update(name="queue-scorer"), "plugins[2].name", "duplicate"),
        (lambda c: c["plugins"].append({"name": "x"}), "plugins[4].type", "required"),
        (lambda c: c["plugins"][0].update(colour="red"), "plugins[0].colour", "Extra"),
        (lambda c: c["schedulingProfiles"][0]["plugins"][1].update(pluginRef="queue"),
         "schedulingProfiles[0].plugins[1].pluginRef", "no plugin named 'queue'"),
        (lambda c: c["schedulingProfiles"][0]["plugins"][0].update(weight=1),
         "schedulingProfiles[0].plugins[0].weight", "only scorers"),
        (lambda c: c["schedulingProfiles"][0]["plugins"][1].update(weight=-1),
         "schedulingProfiles[0].plugins[1].weight", "greater than or equal"),
        (lambda c: c["schedulingProfiles"][0]["plugins"].append({"pluginRef": "queue-scorer"}),
         "schedulingProfiles[0].plugins[4].pluginRef", "twice"),
        (lambda c: (c["plugins"].append({"type": "random-picker"}),
                    c["schedulingProfiles"][0]["plugins"].append({"pluginRef": "random-picker"})),
         "schedulingProfiles[0].plugins[4].pluginRef", "second picker"),
        (lambda c: (c["plugins"].append({"type": "tokenize-producer"}),
                    c["schedulingProfiles"][0]["plugins"].append({"pluginRef": "tokenize-producer"})),
         "schedulingProfiles[0].plugins[4].pluginRef", "producer"),
        (lambda c: c["plugins"].extend([{"type": "single-profile-handler"},
                                        {"type": "single-profile-handler", "name": "h2"}]),
         "plugins[5].type", "second profile handler"),
        (lambda c: c["schedulingProfiles"].append({"name": "other"}), "schedulingProfiles",
         "profile handler"),
        (lambda c: (c["plugins"].append({"type": "single-profile-handler"}),
                    c["schedulingProfiles"].append({"name": "other"})), "schedulingProfiles", "exactly one"),
        (lambda c: c.update(schedulingProfiles=[]), "schedulingProfiles", "at least 1"),
        (lambda c: c.pop("schedulingProfiles"), "schedulingProfiles", "required"),
        (lambda c: c.update(kind="Deployment"), "kind", "EndpointPickerConfig"),
        (lambda c: c["schedulingProfiles"][0].pop("name"), "schedulingProfiles[0].name", "required"),
    ],
)
def test_errors_name_the_bad_field(edit, path, message):
    with pytest.raises(ConfigError) as err:
        parse_config(broken(edit))
    assert err.value.path == path
    assert message in str(err.value)
    assert str(err.value).startswith(path + ": ")


def test_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("plugins: [\n  {type: x\n")
    with pytest.raises(ConfigError, match="invalid YAML") as err:
        load_config(bad)
    assert err.value.path.startswith(str(bad) + ":")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="shipped configs are"):
        load_config("precise")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_defaults_are_added(index):
    cfg = parse_config({"plugins": [{"type": "predicted-ttft-scorer"}],
                        "schedulingProfiles": [{"name": "p", "plugins": [{"pluginRef": "predicted-ttft-scorer"}]}]})
    sched = build_scheduler(cfg, make_ctx(index))
    assert [p.type for p in sched.producers] == ["tokenize-producer", "precise-prefix-producer", "inflight-load-producer"]
    assert sched.handler.type == "single-profile-handler"
    assert sched.runners["p"].picker.type == "max-score-picker"
    assert sched.runners["p"].scorers[0][1] == 1.0


def test_yaml_aliases_and_deep_nesting_are_refused_where_they_are(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(GOOD, sort_keys=False).replace("threshold: 0.7", "threshold: &t 0.7") +
                 "extra: *t\n")
    with pytest.raises(ConfigError, match="aliases") as info:
        load_config(f)
    assert info.value.path.startswith(f"{f}:") and info.value.path.count(":") == 2
    anchored = yaml.safe_dump(GOOD, sort_keys=False).replace("threshold: 0.7", "threshold: &t 0.7")
    f.write_text(anchored)  # an anchor nobody refers to is harmless
    assert load_config(f).plugins[2].parameters == {"threshold": 0.7}
    deep: dict = {"x": 1}
    for _ in range(40):
        deep = {"x": deep}
    with pytest.raises(ConfigError, match="nested deeper"):
        parse_config({**GOOD, "plugins": [{"type": "queue-scorer", "parameters": deep}]})
    cyclic: dict = {}
    cyclic["self"] = cyclic
    with pytest.raises(ConfigError, match="nested deeper"):
        parse_config({**GOOD, "plugins": [{"type": "queue-scorer", "parameters": cyclic}]})


@pytest.mark.parametrize("weight", [float("inf"), float("-inf"), float("nan"), "1e400", 1e7])
def test_weights_are_finite_and_bounded(weight):
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    doc["schedulingProfiles"][0]["plugins"][1]["weight"] = weight
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.path == "schedulingProfiles[0].plugins[1].weight"
