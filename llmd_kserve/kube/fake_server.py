"""FakeApiServer: a :class:`~llmd_kserve.kube.fake.FakeKubeApi` served over HTTP (Leases only), so the real
``kubernetes`` client (``CoordinationV1Api``: serialization, HTTP, ``ApiException`` from the status code) runs
against it, from this process or from other processes given :meth:`FakeApiServer.kubeconfig`.

Not a cluster and not an API server: one fake, for leader-election tests and benchmarks.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from llmd_kserve.kube.fake import FakeKubeApi

_LEASES = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/?]+))?(?:\?.*)?$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubeApi

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, verb: str) -> None:
        m = _LEASES.match(self.path)
        if m is None or (verb in ("read", "replace", "delete")) != bool(m.group(2)):
            self._answer(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                               "message": f"the fake API serves Leases only, not {self.command} {self.path}"})
            return
        ns, name = m.group(1), m.group(2)
        body = None
        if verb in ("create", "replace"):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        f = self.fake
        try:
            if verb == "read":
                out = f._get("Lease", "leases", ns, name)
            elif verb == "create":
                out = f._create("Lease", "leases", ns, body)
            elif verb == "replace":
                out = f._replace("Lease", "leases", ns, name, body)
            else:
                out = f._delete("Lease", "leases", ns, name)
        except Exception as exc:  # the fake raises the client's ApiException: its status and Status body
            status = getattr(exc, "status", None)
            if not isinstance(status, int):
                raise
            self._answer(status, getattr(exc, "body", None) or {"code": status})
            return
        self._answer(201 if verb == "create" else 200,
                     {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", **out} if verb != "delete" else out)

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._serve("read")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("create")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("replace")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("delete")


class FakeApiServer:
    """``with FakeApiServer() as srv:`` ``srv.url`` (``http://127.0.0.1:<port>``) serves ``srv.fake``'s Leases."""

    def __init__(self, fake: FakeKubeApi | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake or FakeKubeApi()
        handler = type("FakeLeaseHandler", (_Handler,), {"fake": self.fake})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-kube-api", daemon=True)

    def start(self) -> FakeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def coordination_api(self) -> Any:
        """A real ``kubernetes.client.CoordinationV1Api`` pointed at this server."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.CoordinationV1Api(client.ApiClient(cfg))

    def kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig naming this server (for ``KUBECONFIG=...`` in another process); its path."""
        path = Path(path)
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}]}))
        return path
