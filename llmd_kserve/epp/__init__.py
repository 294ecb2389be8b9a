"""Gateway API Endpoint Picker: the scheduler served over Envoy ext_proc, Envoy's bootstrap, and the P/D sidecar."""
