"""The OpenAI-compatible HTTP router: app, proxying/streaming, governance."""
