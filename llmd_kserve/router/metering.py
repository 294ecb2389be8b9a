"""The tokens a request may use, reserved by governance before it is sent: its prompt tokens (counted when the
router can) plus ``n × max_tokens`` (``governance.limits.estimate_tokens``)."""

from __future__ import annotations

import logging
from typing import Any

from llmd_kserve.governance.keys import VirtualKey
from llmd_kserve.governance.limits import TokenEstimate, estimate_tokens
from llmd_kserve.router.governance import ParsedRequest

log = logging.getLogger(__name__)


def metered(key: VirtualKey | None) -> bool:
    """Whether the key's tokens are limited (tokens per minute or a budget): then its prompt is counted exactly."""
    return key is not None and (key.tpm is not None or key.token_budget is not None)


def count_prompt(parsed: ParsedRequest, tokenizer: Any) -> tuple[int, tuple[int, ...]] | None:
    """(prompt tokens over all prompts, the first prompt's ids) with the router's tokenizer; None if it fails."""
    try:
        if parsed.kind == "chat":
            ids = [tuple(tokenizer.encode(tokenizer.apply_chat_template(parsed.body["messages"])))]
        else:
            prompt = parsed.body["prompt"]
            ids = [tuple(tokenizer.encode(p)) for p in ([prompt] if isinstance(prompt, str) else prompt)]
    except Exception as exc:  # a template that cannot render this request: fall back to the estimate
        log.debug("counting prompt tokens failed: %s", exc)
        return None
    return sum(len(i) for i in ids), ids[0]


def known_prompt_tokens(parsed: ParsedRequest, token_ids: tuple[int, ...] | None) -> int | None:
    """Prompt tokens the router already knows: token ids the client sent, or the ids of a single prompt."""
    if parsed.prompt_token_ids:
        return parsed.prompt_token_ids
    if token_ids is not None and parsed.num_prompts == 1:
        return len(token_ids)
    return None


def estimate(parsed: ParsedRequest, prompt_tokens: int | None) -> TokenEstimate:
    return estimate_tokens(parsed.kind, parsed.body, prompt_tokens, parsed.prompt_chars, parsed.num_prompts)
