"""Request validation, bearer auth, policy limits and the audit trail."""

from __future__ import annotations

import json
import logging

import pytest

from llmd_kserve.control.requests import validate_request
from llmd_kserve.errors import InvalidRequestError, NotFound, Unauthorized
from llmd_kserve.governance.pipeline import BearerTokenAuth, Governance, Limits


def _raw(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("body, kind, param", [
    (b"{not json", "completion", None),
    (_raw([1, 2]), "completion", None),
    (_raw({"model": "m"}), "completion", "prompt"),
    (_raw({"model": "m", "prompt": 5}), "completion", "prompt"),
    (_raw({"model": "m", "prompt": [1, "a"]}), "completion", "prompt"),
    (_raw({"model": 3, "prompt": "x"}), "completion", "model"),
    (_raw({"model": "m", "prompt": "x", "max_tokens": 0}), "completion", "max_tokens"),
    (_raw({"model": "m", "prompt": "x", "max_tokens": "5"}), "completion", "max_tokens"),
    (_raw({"model": "m", "prompt": "x", "max_tokens": True}), "completion", "max_tokens"),
    (_raw({"model": "m", "prompt": "x", "stream": "yes"}), "completion", "stream"),
    (_raw({"model": "m", "prompt": "x", "temperature": "hot"}), "completion", "temperature"),
    (_raw({"model": "m"}), "chat", "messages"),
    (_raw({"model": "m", "messages": []}), "chat", "messages"),
    (_raw({"model": "m", "messages": [{"content": "hi"}]}), "chat", "messages[0]"),
    (_raw({"model": "m", "messages": [{"role": "user", "content": 3}]}), "chat", "messages[0].content"),
])
def test_malformed_requests_raise_400_with_param(body, kind, param):
    with pytest.raises(InvalidRequestError) as exc:
        validate_request(body, kind)
    err = exc.value.body()["error"]
    assert exc.value.status == 400 and err["param"] == param and err["code"] == 400 and err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_unknown_model_is_404_when_models_known():
    with pytest.raises(NotFound) as exc:
        validate_request(_raw({"model": "other", "prompt": "x"}), "completion", ("served",))
    assert exc.value.status == 404 and exc.value.type == "NotFoundError"
    assert validate_request(_raw({"model": "other", "prompt": "x"}), "completion", ()).model == "other"


def test_valid_requests_parse():
    r = validate_request(_raw({"model": "m", "prompt": [5, 6, 7], "max_tokens": 3, "stream": True}), "completion")
    assert (r.token_ids, r.max_tokens, r.stream, r.prompt.chars) == ((5, 6, 7), 3, True, 0)
    c = validate_request(_raw({"model": "m", "messages": [{"role": "user", "content": "hello"},
                                                          {"role": "user", "content": [{"type": "text", "text": "ab"}]}],
                               "max_completion_tokens": 9}), "chat")
    # every string the engine renders counts: "user" + "hello" + "user" + "text" + "ab"
    assert (c.kind, c.prompt.chars, c.max_tokens, c.stream) == ("chat", 19, 9, False)


def test_bearer_auth():
    auth = BearerTokenAuth(["s3cret"])
    assert auth.check({"Authorization": "Bearer s3cret"})
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
        with pytest.raises(Unauthorized) as exc:
            auth.check(headers)
        assert exc.value.status == 401 and exc.value.body()["error"]["type"] == "AuthenticationError"


def test_policy_limit_on_prompt_chars():
    gov = Governance(limits=Limits(max_prompt_chars=10))
    gov.check_policy(validate_request(_raw({"prompt": "short"}), "completion"))
    with pytest.raises(InvalidRequestError) as exc:
        gov.check_policy(validate_request(_raw({"prompt": "x" * 11}), "completion"))
    assert exc.value.status == 413


def test_audit_hashes_prompt_by_default_mode_and_is_off_by_default(caplog):
    req = validate_request(_raw({"model": "m", "prompt": "top secret"}), "completion")
    with caplog.at_level(logging.INFO, logger="llmd_kserve.audit"):
        Governance().audit("r0", req, "http://e:1", None, "1.2.3.4")
        assert not caplog.records
        Governance(audit_mode="hash").audit("r1", req, "http://e:1", "p", "1.2.3.4")
        Governance(audit_mode="full").audit("r2", req, "http://e:1", "p", "1.2.3.4")
    hashed, full = (json.loads(r.getMessage()) for r in caplog.records)
    assert hashed["request_id"] == "r1" and "prompt" not in hashed and len(hashed["prompt_hmac_sha256"]) == 64
    assert "top secret" not in caplog.records[0].getMessage()
    assert full["prompt"] == "top secret" and full["endpoint"] == "http://e:1"
