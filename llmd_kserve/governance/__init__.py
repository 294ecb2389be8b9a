"""Gateway governance, transport-free: virtual keys, rate limits and budgets, flow control, guardrails, audit trail."""
