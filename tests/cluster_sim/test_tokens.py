"""PrefixTokenCache gives exactly the offline tokenizer's ids while reusing a group's shared prefix."""

from __future__ import annotations

import random

import pytest

from llmd_kserve.bench.workloads import ChatSpec, RagSpec, SharedPrefixSpec, build_requests
from llmd_kserve.cluster_sim.tokens import PrefixTokenCache
from llmd_kserve.tokenizer import SimTokenizer


@pytest.mark.parametrize("spec", [
    SharedPrefixSpec(num_groups=3, prompts_per_group=5, system_prompt_len=300, question_len=20),
    ChatSpec(num_sessions=3, turns_per_session=4, system_prompt_len=50, user_len=20, output_len=10),
    RagSpec(num_requests=12, num_documents=6, document_len=40, docs_min=2, docs_max=4),
])
def test_identical_to_tokenizer(spec) -> None:
    tok, cache = SimTokenizer(), PrefixTokenCache()
    for r in build_requests(spec, random.Random(1)):
        assert cache.encode(r.prompt, r.group or r.session_id) == tok.encode(r.prompt)
    assert cache.hits > 0


def test_tricky_boundaries() -> None:
    tok, cache = SimTokenizer(), PrefixTokenCache()
    texts = ["abc defghijkl  mno", "abc defghijkl  mnp 12", "abc defghijklm", "abc def\n ghi", "abc def\n gh!",
             "abc def 123", "abc def 1234 x", "", "x", "abc déf ghi", "abc déf gho", "abc def,ghi", "abc def,gha"]
    for t in texts:
        assert cache.encode(t, "g") == tok.encode(t)
    assert cache.encode("plain", None) == tok.encode("plain")
