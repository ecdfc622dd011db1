"""``avatar doctor`` against a loopback Kubernetes API server (real kubernetes client, real kubeconfig)
and the real S3 server."""

from __future__ import annotations

import copy
import http.server
import json
import socket
import threading

import pytest
import yaml
from pathlib import Path

from stages.cli import main
from workflows.build import build_dict
from workflows.doctor import FAIL, OK, WARN, check_nodes, run_doctor
from workflows.settings import NodeClass, WorkflowSettings, settings_from_dict

SCHEMA_DIR = Path(__file__).parent / "argo_schema"

NS = "avatar-test"
TOKEN = "kube-token-123"


def _crd(name: str) -> dict:
    """The real Argo CRD, minus its (large) schema."""
    file = {"workflows.argoproj.io": "argoproj.io_workflows.yaml",
            "workflowtemplates.argoproj.io": "argoproj.io_workflowtemplates.yaml"}[name]
    crd = yaml.load((SCHEMA_DIR / file).read_text(), Loader=yaml.CSafeLoader)
    for v in crd["spec"]["versions"]:
        v.pop("schema", None)
    return crd


def _node(name, labels, gpus=0, taints=(), unschedulable=False):
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"taints": list(taints), **({"unschedulable": True} if unschedulable else {})},
            "status": {"allocatable": {"cpu": "16", "memory": "64Gi", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}}}


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


class FakeKubeAPI:
    """Answers GET on the few Kubernetes API paths doctor reads, from a dict of path -> object."""

    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.paths: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                api.paths.append(path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    code, body = 401, {"kind": "Status", "code": 401, "reason": "Unauthorized"}
                elif path in api.objects:
                    code, body = 200, api.objects[path]
                else:
                    code, body = 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": f"{path} not found"}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def healthy(self, settings: WorkflowSettings) -> None:
        o = self.objects
        o[f"/api/v1/namespaces/{NS}"] = {"metadata": {"name": NS}}
        for crd in ("workflows.argoproj.io", "workflowtemplates.argoproj.io"):
            o[f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}"] = _crd(crd)
        o[f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflowtemplates/avatar-pipeline"] = build_dict(settings)
        o[f"/api/v1/namespaces/{NS}/serviceaccounts/avatar-pipeline"] = {"metadata": {"name": "avatar-pipeline"}}
        o[f"/api/v1/namespaces/{NS}/secrets/avatar-pipeline-s3"] = {"data": {"accessKey": "eA==", "secretKey": "eQ=="}}
        o[f"/api/v1/namespaces/{NS}/configmaps/avatar-pipeline-slots"] = {"data": {"a100": "2"}}
        o["/api/v1/nodes"] = {"items": [
            _node("cpu-1", {"avatar-pipeline/node-class": "cpu"}),
            _node("t4-1", {"avatar-pipeline/node-class": "cheap-gpu"}, gpus=1, taints=[GPU_TAINT]),
            _node("a100-1", {"avatar-pipeline/node-class": "a100"}, gpus=8, taints=[GPU_TAINT]),
        ]}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def kube(tmp_path):
    api = FakeKubeAPI()
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u", "namespace": NS}}]}))
    api.kubeconfig = cfg
    yield api
    api.close()


def _settings(bucket: str) -> WorkflowSettings:
    return settings_from_dict({"namespace": NS, "s3": {"bucket": bucket}})


def test_healthy_cluster_passes(kube, s3_env, tmp_path, capsys):
    settings = _settings(s3_env["bucket"])
    kube.healthy(settings)
    sfile = tmp_path / "settings.yaml"
    sfile.write_text(f"namespace: {NS}\ns3:\n  bucket: {s3_env['bucket']}\n")
    code = main(["doctor", "--kubeconfig", str(kube.kubeconfig), "--settings", str(sfile)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 blocking" in out and "ready" in out
    assert "room for 8 pod(s)" in out  # a100: 8 GPUs, 1 per pod
    assert f"/api/v1/namespaces/{NS}" in kube.paths and "/api/v1/nodes" in kube.paths


def test_broken_cluster_findings_name_fixes(kube, s3_env):
    settings = _settings(s3_env["bucket"])
    kube.healthy(settings)
    o = kube.objects
    del o[f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflowtemplates/avatar-pipeline"]
    o[f"/api/v1/namespaces/{NS}/configmaps/avatar-pipeline-slots"] = {"data": {"a100": "0"}}
    o[f"/api/v1/namespaces/{NS}/secrets/avatar-pipeline-s3"] = {"data": {"accessKey": "eA=="}}
    o["/api/v1/nodes"] = {"items": [
        _node("cpu-1", {"avatar-pipeline/node-class": "cpu"}, unschedulable=True),
        _node("t4-1", {"avatar-pipeline/node-class": "cheap-gpu"}, gpus=1,
              taints=[{"key": "team", "value": "vision", "effect": "NoSchedule"}]),
        _node("a100-1", {"avatar-pipeline/node-class": "a100"}, gpus=0, taints=[GPU_TAINT]),
    ]}
    found = {f.check: f for f in run_doctor(settings, kubeconfig=kube.kubeconfig, store_uri="s3://no-such-bucket-x")}
    assert found["namespace"].level == OK
    assert found["template"].level == FAIL and "helm install" in found["template"].fix
    assert found["semaphore"].level == FAIL
    assert found["s3-secret"].level == FAIL and "secretKey" in found["s3-secret"].message
    assert found["nodes:cpu"].level == FAIL and "cordoned" in found["nodes:cpu"].message
    assert found["nodes:cheap-gpu"].level == FAIL and "team=vision" in found["nodes:cheap-gpu"].message
    assert found["nodes:a100"].level == FAIL and "device plugin" in found["nodes:a100"].fix
    assert found["s3"].level == FAIL and "does not exist" in found["s3"].message
    del o[f"/api/v1/namespaces/{NS}"]
    found = {f.check: f for f in run_doctor(settings, kubeconfig=kube.kubeconfig, store_uri=f"s3://{s3_env['bucket']}")}
    assert found["namespace"].level == FAIL and "kubectl create namespace" in found["namespace"].fix
    assert found["s3"].level == OK


def test_stale_template_images_warn(kube, s3_env):
    settings = _settings(s3_env["bucket"])
    kube.healthy(settings)
    old = copy.deepcopy(build_dict(settings))
    for t in old["spec"]["templates"]:
        if "container" in t:
            t["container"]["image"] = t["container"]["image"].replace(":dev", ":old")
    kube.objects[f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflowtemplates/avatar-pipeline"] = old
    found = {f.check: f for f in run_doctor(settings, kubeconfig=kube.kubeconfig, store_uri=f"s3://{s3_env['bucket']}")}
    assert found["template"].level == WARN and ":old" in found["template"].message


def test_unreachable_and_rejected(kube, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AVATAR_S3_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    good = kube.kubeconfig.read_text()
    kube.kubeconfig.write_text(good.replace(TOKEN, "expired"))
    assert main(["doctor", "--kubeconfig", str(kube.kubeconfig)]) == 2
    out = capsys.readouterr().out
    assert "refused our credentials (401)" in out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kube.kubeconfig.write_text(good.replace(kube.url, f"http://127.0.0.1:{port}"))
    assert main(["doctor", "--kubeconfig", str(kube.kubeconfig)]) == 75
    out = capsys.readouterr().out
    assert "unreachable" in out
    assert main(["doctor", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "KUBECONFIG" in capsys.readouterr().out


def test_autoscaled_class_without_nodes_only_warns():
    nc = NodeClass(node_selector={"pool": "a100"}, autoscaled=True)
    assert check_nodes("a100", nc, []).level == WARN
    assert check_nodes("a100", NodeClass(node_selector={"pool": "a100"}), []).level == FAIL
