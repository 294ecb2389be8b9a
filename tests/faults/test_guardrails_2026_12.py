"""FAULTS-2026-12 H6, M10, M12: linear-time PII redaction, guardrails that see every string the engine renders (token
ids, role, tools, suffix, documents, chat_template_kwargs, zero-width and full-width variants), the gateway's text
work off the event loop, a default bound on a request's text, and capped audit text."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from llmd_kserve.governance.audit import verify
from llmd_kserve.governance.guardrails import PIIRedactor, build_guardrails, redact_pii
from llmd_kserve.governance.request_text import fold, request_text
from llmd_kserve.router.app import running_router
from llmd_kserve.tokenizer import SimTokenizer
from tests.faults.procs import engine, request, router, running
from tests.router.fake_upstream import running_fake

GUARDS = "guardrails:\n- {type: blocklist, keywords: [secret-project]}\n- {type: pii-redaction}\n"
ADVERSARIAL = {  # the shapes that made the old e-mail pattern quadratic, and digit runs for the others
    "local-run": lambda n: "a" * n + "@",
    "at-dash": lambda n: "a@" + "a-" * (n // 2),
    "dots-no-tld": lambda n: "a@" + "a." * (n // 2) + "1",
    "digit-dots": lambda n: "1." * (n // 2),
    "paren-digits": lambda n: "(" + "1" * n,
    "digits-dash": lambda n: "1-" * (n // 2) + "x",
}


def _growth(fn, small: str, big: str, pairs: int = 7) -> float:
    """Median over back-to-back runs of CPU time(big) / CPU time(small) (CPU time: a busy machine does not stretch it)."""
    ratios = []
    for _ in range(pairs):
        t0 = time.thread_time()
        fn(small)
        t1 = time.thread_time()
        fn(big)
        ratios.append((time.thread_time() - t1) / (t1 - t0))
    return sorted(ratios)[pairs // 2]


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_redaction_time_grows_linearly_on_adversarial_input(shape):
    make = ADVERSARIAL[shape]
    small, big = make(10_000), make(40_000)
    redact = PIIRedactor().redact
    redact(small)  # warm up
    ratio = _growth(redact, small, big)
    assert ratio < 10, f"{shape}: 4x the input took {ratio:.1f}x the time (linear: about 4, quadratic: 16)"


def test_redaction_still_finds_what_it_should():
    text = ("mail bob@example.com_alice@example.org or x.y+z@sub.example.co.uk; call +1 415-555-0100; "
            "card 4111 1111 1111 1111; ssn 123-45-6789; ip 10.0.0.1\n" + "a" * 200 + "@example.com")
    red = redact_pii(text)
    for leak in ("bob@", "alice@", "x.y+z", "555-0100", "4111", "6789", "10.0.0.1", "@example.com"):
        assert leak not in red, (leak, red)
    assert red.count("[EMAIL]") == 4 and "[PHONE]" in red and "[SSN]" in red and "[IP]" in red
    assert redact_pii("no pii here, just a@b and 12 numbers") == "no pii here, just a@b and 12 numbers"


M10_BODIES = [  # each one a way the engine reads the keyword that the old guardrail did not see
    ("completion", {"prompt": "tell me about secret\u200b-project"}),
    ("completion", {"prompt": "tell me about secret\uff0dproject"}),
    ("completion", {"prompt": "tell me about \uff33\uff25\uff23\uff32\uff25\uff34-project"}),
    ("completion", {"prompt": "hello", "suffix": "secret-project"}),
    ("chat", {"messages": [{"role": "user secret-project", "content": "hi"}]}),
    ("chat", {"messages": [{"role": "user", "content": "hi", "name": "secret-project"}]}),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "description": "about secret-project"}}]}),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "documents": [{"title": "t", "text": "secret-project"}]}),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"topic": "secret-project"}}),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"properties": {"secret-project": {}}}}}]}),
]


@pytest.mark.parametrize("kind, body", M10_BODIES)
def test_blocklist_sees_every_rendered_string_normalised(kind, body):
    g = build_guardrails({"guardrails": [{"type": "blocklist", "keywords": ["Secret-Project"]}]})
    with pytest.raises(Exception) as exc:
        g.pre_request(request_text(body, kind))
    assert getattr(exc.value, "status", None) == 400


def test_request_text_detokenizes_or_marks_token_ids():
    tok = SimTokenizer()
    ids = tok.encode("tell me about secret-project")
    plain = request_text({"prompt": ids}, "completion")
    assert plain.text == "" and not plain.readable and plain.token_ids == len(ids)
    decoded = request_text({"prompt": [ids, ids[:2]], "suffix": "end"}, "completion", lambda t: f"<{len(t)}>")
    assert decoded.readable and decoded.text == f"<{len(ids)}>\n<2>\nend" and decoded.token_ids == len(ids) + 2
    assert fold("A\u00adB\u200c\uff23") == "abc"


def _recs(audit: Path) -> list[dict]:
    return [json.loads(x) for x in audit.read_text().splitlines()]


def _word_tokenizer(path: Path) -> Path:
    """A word-level tokenizer.json whose ids decode back to the words (a real model tokenizer does the same)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "tell", "me", "about", "secret-project", "weather"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


async def _post(s: aiohttp.ClientSession, url: str, body: dict, kind: str = "completion") -> tuple[int, dict]:
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    async with s.post(url + path, json={"max_tokens": 2, **body}) as r:
        return r.status, {"reason": r.headers.get("x-llmd-drop-reason"), "body": await r.read()}


async def test_m10_blind_spots_are_refused_through_the_router(tmp_path):
    (tmp_path / "g.yaml").write_text(GUARDS)
    audit = tmp_path / "audit.jsonl"
    ids = SimTokenizer().encode("tell me about secret-project")
    async with running_fake() as fake, running_router(
            endpoints=[fake.url], guardrails_file=str(tmp_path / "g.yaml"), audit_file=str(audit),
            audit="full") as r, aiohttp.ClientSession() as s:
        assert (await _post(s, r.url, {"prompt": "tell me about the weather"}))[0] == 200
        for kind, body in [*M10_BODIES, ("completion", {"prompt": ids})]:
            status, got = await _post(s, r.url, body, kind)
            assert (status, got["reason"]) == (400, "guardrail"), (body, got)
        status, got = await _post(s, r.url, {"prompt": [1, 2, 3]})
        assert status == 400 and b"token ids" in got["body"]  # the sim tokenizer cannot give the text back
    assert len(fake.seen) == 1
    assert sum(rec["event"] == "deny" for rec in _recs(audit)) == len(M10_BODIES) + 2

    (tmp_path / "allow.yaml").write_text(GUARDS.replace("[secret-project]}", "[secret-project], tokenIdPrompts: allow}"))
    async with running_fake() as fake, running_router(
            endpoints=[fake.url], guardrails_file=str(tmp_path / "allow.yaml"), audit_file=str(audit),
            audit="full") as r, aiohttp.ClientSession() as s:
        assert (await _post(s, r.url, {"prompt": ids}))[0] == 200
    admit = [rec for rec in _recs(audit) if rec["event"] == "admit"][-1]
    assert admit["prompt_token_ids"] == len(ids) and admit["detokenized"] is False and admit["prompt"] == ""
    assert len(admit["prompt_hmac_sha256"]) == 64

    tok = _word_tokenizer(tmp_path / "tokenizer.json")
    async with running_fake() as fake, running_router(
            endpoints=[fake.url], guardrails_file=str(tmp_path / "g.yaml"), audit_file=str(audit), audit="full",
            tokenizer=str(tok)) as r, aiohttp.ClientSession() as s:
        assert (await _post(s, r.url, {"prompt": [1, 2, 3, 4]}))[0] == 400  # "tell me about secret-project"
        assert (await _post(s, r.url, {"prompt": [1, 2, 3, 5]}))[0] == 200
    admit = [rec for rec in _recs(audit) if rec["event"] == "admit"][-1]
    assert admit["prompt"] == "tell me about weather" and admit["detokenized"] is True
    assert verify([audit]).ok


async def test_full_audit_keeps_at_most_64k_characters_of_an_answer(tmp_path):
    (tmp_path / "g.yaml").write_text(GUARDS)
    audit = tmp_path / "audit.jsonl"
    async with running_fake(tokens=100_000) as fake, running_router(
            endpoints=[fake.url], guardrails_file=str(tmp_path / "g.yaml"), audit_file=str(audit),
            audit="full") as r, aiohttp.ClientSession() as s:
        assert (await _post(s, r.url, {"prompt": "mail bob@example.com"}))[0] == 200
    admit, done = (rec for rec in _recs(audit) if rec["event"] in ("admit", "done"))
    assert admit["prompt"] == "mail [EMAIL]" and "prompt_truncated" not in admit
    assert len(done["completion"]) == 64 * 1024 and done["completion_truncated"] is True
    assert len(done["completion_hmac_sha256"]) == 64 and verify([audit]).ok


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """An engine and a router with the report's guardrails, the audit trail in full mode and no token limit."""
    tmp = tmp_path_factory.mktemp("guard")
    (tmp / "g.yaml").write_text(GUARDS)
    eng = engine(tmp, "e0")
    with running(eng):
        r = router(tmp, eng.url, "--guardrails-file", str(tmp / "g.yaml"), "--audit-file", str(tmp / "audit.jsonl"),
                   "--audit", "full", "--max-prompt-tokens", "0")
        with running(r):
            yield r, tmp / "audit.jsonl"


@pytest.mark.slow
def test_health_answers_while_a_big_adversarial_prompt_is_admitted(live):
    r, audit = live
    prompt = "a" * 400_000 + "@ " + "1." * 150_000 + " (" + "1" * 250_000  # about 1M characters, under the limit
    events: list[str] = []
    answer: list = []

    def big() -> None:
        answer.append(request(r.url + "/v1/completions", {"prompt": prompt, "max_tokens": 1},
                              {"x-request-id": "big-adversarial"}, timeout=120))
        events.append("big")

    t = threading.Thread(target=big)
    t.start()
    while t.is_alive():  # /health keeps answering while the router reads, checks, redacts and forwards the prompt
        status = request(r.url + "/health", timeout=30)[0]
        if t.is_alive():
            events.append(f"health {status}")
    t.join()
    assert events[-1] == "big" and "health 200" in events
    recs = {rec["event"]: rec for rec in _recs(audit) if rec.get("client_request_id") == "big-adversarial"}
    assert recs["done"]["status"] == answer[0][0]  # admitted and sent on (the engine finds it over its context)
    admit = recs["admit"]
    assert admit["prompt_chars"] == len(prompt) and admit["prompt_truncated"] is True  # M12: capped, hashed whole
    assert len(admit["prompt"]) == 64 * 1024 and len(admit["prompt_hmac_sha256"]) == 64


@pytest.mark.slow
def test_m12_big_chat_name_is_refused_by_the_default_text_limit(live):
    r, audit = live
    name = "word user@example.com 555-123-4567 " * 400_000  # 14 MB, not rendered by the chat template
    body = {"messages": [{"role": "user", "content": "hi", "name": name}], "max_tokens": 1}
    status, raw, _ = request(r.url + "/v1/chat/completions", body, timeout=120)
    assert status == 413, raw[:200]
    err = json.loads(raw)["error"]
    assert err["type"] == "RequestTooLargeError" and "1048576" in err["message"] and err["param"] == "messages"
    assert all(len(line) < 1 << 20 for line in audit.read_bytes().splitlines())
    assert verify([audit]).ok
