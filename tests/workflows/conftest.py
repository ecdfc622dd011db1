"""Validators for Argo manifests: Argo v4.1.2's JSON schema in strict mode, and the full CRDs'
openAPIV3Schema (enums). See argo_schema/PROVENANCE.md."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from factories.argo_schema import SCHEMA_DIR, argo_errors, crd_schema, strict_definitions  # noqa: E402,F401


@pytest.fixture(scope="session")
def argo_validate() -> Callable[..., list[str]]:
    """``argo_validate(doc, kind=None) -> list of errors``."""
    return argo_errors


@pytest.fixture(autouse=True)
def _clean_cluster_env(monkeypatch, tmp_path):
    """Tests see no cluster settings from the developer's shell or home folder."""
    import os

    for k in list(os.environ):
        if k.startswith(("ARGO_", "AVATAR_WORKFLOW_", "AVATAR_IMAGE_", "AVATAR_ARGO_")) or k == "KUBECONFIG":
            monkeypatch.delenv(k)
    monkeypatch.setenv("AVATAR_ARGO_CONFIG", str(tmp_path / "no-argo-config.yaml"))


class FakeArgoServer:
    """A loopback HTTP server answering the Argo Server REST paths the client uses, checking the
    bearer token, the request paths and bodies (a created Workflow must validate against Argo's
    schema and reference an installed template). State is plain dicts the test arranges."""

    def __init__(self, token: str, namespace: str):
        import http.server
        import threading

        self.token = token
        self.namespace = namespace
        self.templates: dict[str, dict] = {}
        self.workflows: dict[str, dict] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.fail_with: int | None = None  # answer every request with this HTTP status
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                server.requests.append((method, self.path, body))
                if server.fail_with is not None:
                    return self._reply(server.fail_with, {"code": 14, "message": "unavailable"})
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self._reply(401, {"code": 16, "message": "token not valid"})
                code, reply = server.route(method, self.path.split("?")[0], body)
                self._reply(code, reply)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] != ["api", "v1"] or len(parts) < 4 or parts[3] != self.namespace:
            return 404, {"code": 5, "message": f"no route {method} {path}"}
        kind, rest = parts[2], parts[4:]
        if kind == "workflow-templates" and method == "GET" and len(rest) == 1:
            if rest[0] in self.templates:
                return 200, self.templates[rest[0]]
            return 404, {"code": 5, "message": f'workflowtemplates.argoproj.io "{rest[0]}" not found'}
        if kind == "workflows" and method == "POST" and not rest:
            wf = body["workflow"]
            errors = argo_errors(wf, "Workflow")
            if body.get("namespace") != self.namespace or errors:
                return 400, {"code": 3, "message": "; ".join(errors) or "namespace mismatch"}
            ref = wf["spec"]["workflowTemplateRef"]["name"]
            if ref not in self.templates:
                return 400, {"code": 3, "message": f'workflowtemplates.argoproj.io "{ref}" not found'}
            name = wf["metadata"]["generateName"] + f"{len(self.workflows):05d}"
            created = {**wf, "metadata": {**wf["metadata"], "name": name, "namespace": self.namespace},
                       "status": {"phase": "Pending"}}
            created["metadata"].pop("generateName")
            self.workflows[name] = created
            return 200, created
        if kind == "workflows" and rest and rest[0] not in self.workflows:
            return 404, {"code": 5, "message": f'workflows.argoproj.io "{rest[0]}" not found'}
        if kind == "workflows" and method == "GET" and len(rest) == 1:
            return 200, self.workflows[rest[0]]
        if kind == "workflows" and method == "PUT" and len(rest) == 2 and rest[1] == "retry":
            wf = self.workflows[rest[0]]
            if body != {"name": rest[0], "namespace": self.namespace}:
                return 400, {"code": 3, "message": f"bad retry body {body}"}
            if wf.get("status", {}).get("phase") not in ("Failed", "Error"):
                return 500, {"code": 13, "message": "workflow must be Failed/Error to retry"}
            wf["status"]["phase"] = "Running"
            return 200, wf
        return 404, {"code": 5, "message": f"no route {method} {path}"}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def argo_server(monkeypatch):
    """A FakeArgoServer on 127.0.0.1 with ARGO_SERVER/ARGO_TOKEN/ARGO_NAMESPACE pointing at it."""
    server = FakeArgoServer(token="s3cr3t-token", namespace="avatar-test")
    monkeypatch.setenv("ARGO_SERVER", server.url)
    monkeypatch.setenv("ARGO_TOKEN", "Bearer s3cr3t-token")
    monkeypatch.setenv("ARGO_NAMESPACE", "avatar-test")
    yield server
    server.close()
