"""The simulated vLLM replica: block pool, step model, engine core, HTTP server, KV-event publisher."""
