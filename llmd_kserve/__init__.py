"""llmd_kserve: llm-d's KV-cache-aware routing and P/D disaggregation for KServe and Kubeflow."""

__version__ = "0.1.0"
