"""Prefill/decode disaggregation: protocol models, deciders, and the prefill-then-decode orchestration."""
