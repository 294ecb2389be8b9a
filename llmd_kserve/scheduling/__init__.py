"""The scheduler: profile runner (filters, weighted scorers, picker) and one module per built-in plugin."""
