"""Benchmarking: workloads, load generator, latency/goodput metrics, reports."""
