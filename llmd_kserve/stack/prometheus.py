"""Prometheus for the local stack: is it installed, its scrape config (router + engines), its command line."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None


def _target(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def scrape_config(router_url: str | Sequence[str], engine_urls: Sequence[str]) -> dict:
    """Scrape the router or its replicas (job ``llmd-router``) and the engines (job ``vllm``) every second."""
    routers = [router_url] if isinstance(router_url, str) else list(router_url)
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "llmd-router", "static_configs": [{"targets": [_target(u) for u in routers]}]},
            {"job_name": "vllm", "static_configs": [{"targets": [_target(u) for u in engine_urls]}]},
        ],
    }


def prometheus_argv(data_dir: Path, host: str, port: int, router_url: str | Sequence[str], engine_urls: Sequence[str]) -> list[str]:
    """Write ``data_dir/prometheus.yml`` and return the command that runs Prometheus on it (TSDB in ``data_dir``)."""
    conf = data_dir / "prometheus.yml"
    conf.write_text(yaml.safe_dump(scrape_config(router_url, engine_urls), sort_keys=False))
    return ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address={host}:{port}", "--storage.tsdb.retention.time=1d"]
