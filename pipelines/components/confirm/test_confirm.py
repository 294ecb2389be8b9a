import pytest
from kfp import dsl

from llmd_kserve.errors import ConfigError
from pipelines.components._testing import artifact, interface
from pipelines.components.confirm.component import confirm


def test_interface():
    params, ins, outs = interface(confirm)
    assert ins == {"candidates": "system.Artifact"}
    assert outs == {"config": "system.Artifact", "configmap": "system.Artifact", "runs": "system.Dataset",
                    "report": "system.HTML", "metrics": "system.Metrics"}
    assert {"include_default", "name", "namespace", "time_scale"} == set(params)


def test_rejects_a_file_tune_did_not_write(tmp_path):
    bad = tmp_path / "candidates"
    bad.write_text('{"nope": 1}')
    outs = {k: artifact(t, tmp_path, k) for k, t in (("config", dsl.Artifact), ("configmap", dsl.Artifact),
                                                     ("runs", dsl.Dataset), ("report", dsl.HTML),
                                                     ("metrics", dsl.Metrics))}
    cand = dsl.Artifact(name="candidates", uri=str(bad))
    with pytest.raises(ConfigError, match="not a candidates file"):
        confirm.python_func(candidates=cand, **outs, include_default=True, name="llmd", namespace="llmd",
                            time_scale=1.0)
