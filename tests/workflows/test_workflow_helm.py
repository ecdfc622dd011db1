"""``avatar workflow render --for-helm``: rendered by Helm's own library (helm-python-sdk) with the
values of any settings, it gives exactly the template those settings build."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from workflows.build import build_dict, render_yaml
from workflows.helm import helm_values
from workflows.settings import WorkflowSettings, settings_from_dict

HELPERS = Path(__file__).resolve().parents[2] / "charts" / "avatar-pipeline" / "templates" / "_helpers.tpl"


def _custom() -> WorkflowSettings:
    nc = {"node_selector": {"cloud.example/pool": "gpu-x"}, "tolerations": [{"key": "team", "operator": "Equal",
                                                                           "value": "vision", "effect": "NoExecute"}],
          "requests": {"cpu": "2", "memory": "3Gi", "nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"},
          "shm_size": "3Gi", "scratch_size": "7Gi", "timeout": "90m", "pending_timeout": "5m", "priority_class": "p1"}
    return settings_from_dict({
        "name": "avatars-v2", "namespace": "farm", "label_prefix": "acme.io",
        "images": {"tracker": {"registry": "ghcr.io/acme", "repository": "trk", "tag": "1.0"},
                   "masks": {"registry": "", "repository": "msk", "tag": "2.0"},
                   "train": {"registry": "reg:5000/x", "repository": "trn", "tag": "3.0"}},
        "image_pull_policy": "Always",
        "node_classes": {"cpu": {"node_selector": {}, "requests": {"cpu": "1"}, "limits": {}, "timeout": "1h"},
                         "cheap-gpu": nc, "a100": {**nc, "priority_class": "", "tolerations": []}},
        "s3": {"endpoint": "", "bucket": "b2", "prefix": "/team/x/", "region": "eu-west-1",
               "credentials_secret": "my-s3", "access_key_key": "id", "secret_key_key": "key"},
        "retry": {"limit": 9, "backoff": "5s", "factor": 3, "max_backoff": "2m"},
        "semaphore": {"config_map": "gpu-slots", "key": "k", "node_classes": ["cheap-gpu", "a100"]},
        "active_deadline_seconds": 172800, "ttl_after_success": 2592000, "ttl_after_failure": 1, "pod_gc": "OnPodCompletion",
        "pod_gc_delay": "1m", "service_account": "runner",
    })


@pytest.fixture(scope="module")
def chart(tmp_path_factory):
    """A minimal chart around the --for-helm file, with the real chart's helpers."""
    if not HELPERS.is_file():
        pytest.fail(f"{HELPERS} is missing: the for-helm template relies on the chart's named templates")
    d = tmp_path_factory.mktemp("chart") / "avatar-pipeline"
    (d / "templates").mkdir(parents=True)
    (d / "files").mkdir()
    (d / "Chart.yaml").write_text("apiVersion: v2\nname: avatar-pipeline\nversion: 0.1.0\nappVersion: dev\n")
    (d / "values.yaml").write_text("{}\n")
    shutil.copy(HELPERS, d / "templates" / "_helpers.tpl")
    for pipeline in PIPELINES:
        (d / "templates" / f"{pipeline}.yaml").write_text(f'{{{{ tpl (.Files.Get "files/{pipeline}.yaml") . }}}}\n')
        (d / "files" / f"{pipeline}.yaml").write_text(render_yaml(WorkflowSettings(), for_helm=True, pipeline=pipeline))
    return d


PIPELINES = ("avatar", "drive")


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("settings", [WorkflowSettings(), _custom()], ids=["defaults", "custom"])
def test_helm_render_equals_build(chart, settings, pipeline, argo_validate):
    import helm_python as helm

    out = helm.Chart.load(chart).render(helm_values(settings), name="r", namespace=settings.namespace)
    doc = yaml.safe_load(out[f"avatar-pipeline/templates/{pipeline}.yaml"])
    assert doc == build_dict(settings, pipeline)
    assert argo_validate(doc) == []


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_for_helm_text_does_not_depend_on_the_settings(pipeline):
    text = render_yaml(WorkflowSettings(), for_helm=True, pipeline=pipeline)
    assert text == render_yaml(_custom(), for_helm=True, pipeline=pipeline)
    assert "{{`{{workflow.parameters.actor}}`}}" in text and '{{ include "avatar-pipeline.storeUri" . | quote }}' in text
    assert "avatar-pipeline/tracker:dev" not in text and "minio" not in text and "s3://" not in text


def test_drive_for_helm_is_named_after_the_main_template():
    text = render_yaml(WorkflowSettings(), for_helm=True, pipeline="drive")
    assert 'name: {{ printf "%s-drive" .Values.workflowTemplate.name | quote }}' in text
    assert "{{`{{workflow.parameters.driver}}`}}" in text and "avatar-pipeline/train:dev" not in text


def test_custom_settings_really_differ():
    a, b = build_dict(WorkflowSettings()), build_dict(_custom())
    assert a != b
    tb = {t["name"]: t for t in b["spec"]["templates"]}
    assert tb["masks"]["container"]["image"] == "msk:2.0"
    assert tb["masks"]["synchronization"]["semaphores"][0]["configMapKeyRef"]["name"] == "gpu-slots"
    assert "synchronization" not in tb["ingest"]
    assert tb["render"]["outputs"]["artifacts"][0]["s3"]["endpoint"] == "s3.amazonaws.com"
    assert tb["render"]["outputs"]["artifacts"][0]["s3"]["key"].startswith("team/x/actors/")


def test_cli_writes_the_chart_files(tmp_path, monkeypatch):
    """`avatar workflow render --for-helm [--pipeline drive]` (what `make chart` runs) writes exactly these texts."""
    from stages.cli import main

    for var in ("AVATAR_WORKFLOW_SETTINGS", "AVATAR_IMAGE_REGISTRY", "AVATAR_IMAGE_TAG", "ARGO_NAMESPACE",
                "AVATAR_WORKFLOW_S3_ENDPOINT", "AVATAR_WORKFLOW_S3_BUCKET"):
        monkeypatch.delenv(var, raising=False)
    for pipeline in PIPELINES:
        out = tmp_path / f"{pipeline}.yaml"
        assert main(["workflow", "render", "--for-helm", "--pipeline", pipeline, "--out", str(out)]) == 0
        assert out.read_text() == render_yaml(WorkflowSettings(), for_helm=True, pipeline=pipeline)
    assert main(["workflow", "render", "--pipeline", "train", "--out", str(tmp_path / "x.yaml")]) == 2
    assert not (tmp_path / "x.yaml").exists()
