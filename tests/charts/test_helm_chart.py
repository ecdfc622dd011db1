"""The Helm chart, rendered and linted with Helm's own Go library (helm-python-sdk), offline.

Every rendered Kubernetes object is validated with kubernetes-validate --strict for a recent
Kubernetes; every Argo object (the WorkflowTemplate, the artifact repository in its ConfigMap)
against Argo v4.1.2's schema. The WorkflowTemplates inside the chart (the main one and the drive
one) must be exactly what ``render_yaml(settings, for_helm=True[, pipeline="drive"])`` writes
(``make chart`` regenerates them).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import helm_python as helm  # noqa: E402
import kubernetes_validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "avatar-pipeline"
WT_FILE = CHART / "files" / "workflowtemplate.yaml"
DRIVE_WT_FILE = CHART / "files" / "drive-workflowtemplate.yaml"
WT_FILES = {"avatar": WT_FILE, "drive": DRIVE_WT_FILE}
KUBE_VERSION = "1.33.0"
NAMESPACE = "avatar"

CUSTOM = {
    "images": {"registry": "registry.example.com/ml/avatar", "tag": "v1.2.3", "pullPolicy": "Always",
               "pullSecrets": ["regcred"], "train": {"repository": "train", "tag": "v1.2.4-sm80"}},
    "nodeClasses": {
        "cheap-gpu": {"nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                      "tolerations": [{"key": "gpu", "operator": "Equal", "value": "l4", "effect": "NoSchedule"}]},
        "a100": {"nodeSelector": {"node.kubernetes.io/instance-type": "a2-highgpu-1g",
                                  "avatar-pipeline/node-class": None},  # null drops a default label
                 "requests": {"cpu": "12", "memory": "80Gi", "nvidia.com/gpu": "1"}},
    },
    "s3": {"endpoint": "https://s3.eu-central-1.amazonaws.com", "bucket": "my-avatars", "prefix": "team-a/",
           "region": "eu-central-1", "existingSecret": "my-s3-keys"},
    "semaphore": {"slots": 4},
    "serviceAccount": {"create": False, "name": "argo-workflow"},
    "priorityClasses": {"create": False},
    "retry": {"limit": 2},
}


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _needs_wt_file() -> None:
    for path in WT_FILES.values():
        if not path.is_file():
            pytest.fail(f"{path.relative_to(ROOT)} is missing; run `make chart`")


def render(values: dict | None = None, with_wt: bool = True) -> list[dict]:
    """All objects the chart renders for ``values`` (the WorkflowTemplate left out if not with_wt)."""
    values = copy.deepcopy(values or {})
    if with_wt:
        _needs_wt_file()
    else:
        values.setdefault("workflowTemplate", {})["enabled"] = False
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values, name="avatar", namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def templates(docs: list[dict]) -> dict[str, dict]:
    """The WorkflowTemplates by pipeline: ``{"avatar": main, "drive": drive}``."""
    out = {}
    for d in by_kind(docs, "WorkflowTemplate"):
        component = d["metadata"]["labels"]["app.kubernetes.io/component"]
        out["drive" if component == "drive-template" else "avatar"] = d
    assert len(out) == len(by_kind(docs, "WorkflowTemplate")), "two WorkflowTemplates of one kind"
    return out


def _validate_all(docs: list[dict], argo_validate, kube_version: str = KUBE_VERSION) -> None:
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("argoproj.io/"):
            problems += [f"{where}: {e}" for e in argo_validate(doc, doc["kind"])]
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{where}: {'/'.join(map(str, e.path))}: {e.message}")
        if doc["kind"] == "ConfigMap" and "workflows.argoproj.io/default-artifact-repository" in \
                doc["metadata"].get("annotations", {}):
            for key, text in doc["data"].items():
                problems += [f"{where} {key}: {e}" for e in argo_validate(yaml.safe_load(text), "ArtifactRepository")]
    assert not problems, "\n".join(problems)


# -- lint ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, CUSTOM], ids=["default", "custom"])
def test_lint_is_clean(values):
    _needs_wt_file()
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


def test_lint_reports_a_broken_chart(tmp_path):
    """The lint really looks at the templates: a chart with a template syntax error fails it."""
    chart = helm.Chart.load(str(CHART))
    copy_dir = Path(chart.save_dir(tmp_path))
    (copy_dir / "templates" / "broken.yaml").write_text("kind: ConfigMap\nname: {{ .Values.nope ")
    report = helm.lint(str(copy_dir), None, strict=True)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"])


# -- render and validate ---------------------------------------------------------------------------


def test_default_objects_are_valid(argo_validate):
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "ConfigMap", "PriorityClass",
                            "PriorityClass", "WorkflowTemplate", "WorkflowTemplate"])
    wts = templates(docs)
    assert (wts["avatar"]["metadata"]["name"], wts["drive"]["metadata"]["name"]) == \
           ("avatar-pipeline", "avatar-pipeline-drive")
    for version in ("1.27.0", KUBE_VERSION, kubernetes_validate.latest_version()):  # Chart.yaml: >= 1.27
        _validate_all(docs, argo_validate, version)


def test_custom_objects_are_valid(argo_validate):
    docs = render(CUSTOM)
    _validate_all(docs, argo_validate)
    kinds = {d["kind"] for d in docs}
    assert "ServiceAccount" not in kinds and "PriorityClass" not in kinds and "Secret" not in kinds


def test_objects_without_workflowtemplate_are_valid(argo_validate):
    """The parts this chart writes itself, checked even before files/workflowtemplate.yaml exists."""
    for values in ({}, CUSTOM, {"s3": {"credentials": {"accessKey": "AK", "secretKey": "SK"}}}):
        docs = render(values, with_wt=False)
        assert not by_kind(docs, "WorkflowTemplate")
        _validate_all(docs, argo_validate)


def test_rbac_lets_the_executor_report_results():
    docs = render(with_wt=False)
    (role,) = by_kind(docs, "Role")
    rules = [(r["apiGroups"], r["resources"], sorted(r["verbs"])) for r in role["rules"]]
    assert (["argoproj.io"], ["workflowtaskresults"], ["create", "patch"]) in rules
    (binding,) = by_kind(docs, "RoleBinding")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_artifact_repository_points_at_the_store():
    docs = render(CUSTOM, with_wt=False)
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "artifact-repositories"]
    assert cm["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"] == "default-v1"
    repo = yaml.safe_load(cm["data"]["default-v1"])["s3"]
    assert repo["bucket"] == "my-avatars"
    assert repo["endpoint"] == "s3.eu-central-1.amazonaws.com" and repo["insecure"] is False
    assert repo["accessKeySecret"] == {"name": "my-s3-keys", "key": "accessKey"}
    assert repo["keyFormat"] == "argo/{{workflow.name}}/{{pod.name}}"  # Argo's braces survive Helm
    default = yaml.safe_load([d for d in by_kind(render(with_wt=False), "ConfigMap")
                              if d["metadata"]["name"] == "artifact-repositories"][0]["data"]["default-v1"])["s3"]
    assert default["endpoint"] == "minio.minio.svc.cluster.local:9000" and default["insecure"] is True


def test_semaphore_and_priority_classes():
    docs = render(with_wt=False)
    (slots,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "avatar-pipeline-slots"]
    assert slots["data"] == {"a100": "2"}
    pcs = {d["metadata"]["name"]: d for d in by_kind(docs, "PriorityClass")}
    assert pcs["avatar-pipeline-train"]["value"] > pcs["avatar-pipeline-batch"]["value"]
    assert all(p["preemptionPolicy"] == "Never" and p["globalDefault"] is False for p in pcs.values())
    custom = render(CUSTOM, with_wt=False)
    assert [d["data"] for d in by_kind(custom, "ConfigMap") if d["metadata"]["name"] == "avatar-pipeline-slots"] \
        == [{"a100": "4"}]


def test_secret_from_keys_or_existing_secret():
    docs = render({"s3": {"credentials": {"accessKey": "AK", "secretKey": "SK"}}}, with_wt=False)
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == "avatar-pipeline-s3"
    assert secret["stringData"] == {"accessKey": "AK", "secretKey": "SK"}
    assert not by_kind(render({"s3": {"existingSecret": "mine", "credentials": {"accessKey": "AK", "secretKey": "SK"}}},
                              with_wt=False), "Secret")
    with pytest.raises(helm.HelmError, match="both accessKey and secretKey"):
        render({"s3": {"credentials": {"accessKey": "AK"}}}, with_wt=False)


# -- values schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values, where, words", [
    ({"nodeClasses": {"a100": {"timeout": "6 hours"}}}, "/nodeClasses/a100/timeout", "does not match"),
    ({"nodeClasses": {"cpu": {"requests": {"memory": "lots"}}}}, "/nodeClasses/cpu/requests/memory", "does not match"),
    ({"retry": {"limit": "many"}}, "/retry/limit", "want integer"),
    ({"images": {"pullPolicy": "Sometimes"}}, "/images/pullPolicy", "must be one of"),
    ({"s3": {"bucket": "My_Bucket"}}, "/s3/bucket", "does not match"),
    ({"semaphore": {"slots": 0}}, "/semaphore/slots", "minimum"),
    ({"images": {"tracker": {"repositry": "x"}}}, "/images/tracker", "repositry"),
])
def test_values_schema_rejects_bad_values_readably(values, where, words):
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    message = str(err.value)
    assert where in message and words in message, message
    with pytest.raises(helm.HelmError):  # and rendering refuses them too
        chart.render(values, name="avatar", namespace=NAMESPACE)


def test_values_schema_accepts_defaults_and_custom():
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(None)
    chart.validate_schema(CUSTOM)


def test_node_classes_cover_the_stage_graph():
    from stages.graph import NODE_CLASSES

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["nodeClasses"]) == set(NODE_CLASSES)
    gpu = values["nodeClasses"]["a100"]
    assert gpu["requests"]["nvidia.com/gpu"] == gpu["limits"]["nvidia.com/gpu"]


def test_values_defaults_match_workflow_settings():
    """A default install behaves like `avatar workflow render` with default settings."""
    import workflows.settings as settings_mod

    s = settings_mod.WorkflowSettings()
    v = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, nc in s.node_classes.items():
        got = v["nodeClasses"][name]
        assert (got["nodeSelector"], got["tolerations"], got["requests"], got["limits"]) == \
               (nc.node_selector, nc.tolerations, nc.requests, nc.limits), name
        assert (got["shmSize"], got["scratchSize"], got["timeout"], got["pendingTimeout"]) == \
               (nc.shm_size, nc.scratch_size, nc.timeout, nc.pending_timeout), name
    assert (v["s3"]["endpoint"], v["s3"]["bucket"], v["s3"]["region"], v["s3"]["credentials"]["secretName"],
            v["s3"]["accessKeyKey"], v["s3"]["secretKeyKey"]) == \
           (s.s3.endpoint, s.s3.bucket, s.s3.region, s.s3.credentials_secret, s.s3.access_key_key, s.s3.secret_key_key)
    assert (v["retry"]["limit"], v["retry"]["backoff"], v["retry"]["factor"], v["retry"]["maxBackoff"]) == \
           (s.retry.limit, s.retry.backoff, s.retry.factor, s.retry.max_backoff)
    assert (v["semaphore"]["configMap"], v["semaphore"]["key"], tuple(v["semaphore"]["nodeClasses"])) == \
           (s.semaphore.config_map, s.semaphore.key, tuple(s.semaphore.node_classes))
    assert (v["workflowTemplate"]["name"], v["serviceAccount"]["name"], v["images"]["registry"]) == \
           (s.name, s.service_account, s.images["tracker"].registry)
    assert {k: i["repository"] for k, i in v["images"].items() if isinstance(i, dict)} == \
           {k: r.repository for k, r in s.images.items()}


# -- the WorkflowTemplate ----------------------------------------------------------------------------


def _render_for_helm(pipeline: str = "avatar") -> str:
    import workflows.build as build
    import workflows.settings as settings

    return build.render_yaml(settings.WorkflowSettings(), for_helm=True, pipeline=pipeline)


@pytest.mark.parametrize("pipeline", sorted(WT_FILES))
def test_workflowtemplate_file_is_what_render_for_helm_writes(pipeline):
    expected = _render_for_helm(pipeline)
    path = WT_FILES[pipeline]
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing; run `make chart`"
    assert path.read_text() == expected, f"{path.relative_to(ROOT)} is stale; run `make chart`"


def test_drive_workflowtemplate_is_the_drive_pipeline_named_after_the_main_one():
    """The chart's drive template is what `avatar workflow render --pipeline drive` builds for the same settings,
    and it follows a renamed main template (`avatar submit-drive` looks for <name>-drive)."""
    import workflows.build as build
    import workflows.settings as settings

    drive = templates(render())["drive"]
    built = build.build_dict(settings.WorkflowSettings(), "drive")
    assert [t["name"] for t in drive["spec"]["templates"]] == [t["name"] for t in built["spec"]["templates"]]
    assert [t.get("dag") for t in drive["spec"]["templates"]] == [t.get("dag") for t in built["spec"]["templates"]]
    assert drive["spec"]["arguments"] == built["spec"]["arguments"]
    renamed = templates(render({"workflowTemplate": {"name": "avatars-v2"}}))
    assert renamed["drive"]["metadata"]["name"] == "avatars-v2-drive"
    assert renamed["drive"]["spec"]["workflowMetadata"]["labels"] == {"avatar-pipeline/pipeline": "avatars-v2-drive"}
    drive_args = {t["name"]: t["container"]["args"] for t in renamed["drive"]["spec"]["templates"] if "container" in t}
    assert "drivers/{{workflow.parameters.driver}}" in drive_args["track"]
    assert not by_kind(render({"workflowTemplate": {"enabled": False}}), "WorkflowTemplate")


@pytest.mark.parametrize("pipeline", sorted(WT_FILES))
def test_workflowtemplate_takes_images_and_node_classes_from_values(pipeline):
    wt = templates(render(CUSTOM))[pipeline]
    images = {t["container"]["image"] for t in wt["spec"]["templates"] if "container" in t}
    assert "registry.example.com/ml/avatar/tracker:v1.2.3" in images
    assert "registry.example.com/ml/avatar/train:v1.2.4-sm80" in images  # the drive step runs in the train image
    selectors = [t.get("nodeSelector") for t in wt["spec"]["templates"] if "container" in t]
    if pipeline == "avatar":  # the drive template has no a100 stage
        assert {"node.kubernetes.io/instance-type": "a2-highgpu-1g"} in selectors
    # Helm merges maps: the default label stays unless set to null
    assert {"cloud.google.com/gke-accelerator": "nvidia-l4", "avatar-pipeline/node-class": "cheap-gpu"} in selectors
    tolerations = [t.get("tolerations") for t in wt["spec"]["templates"] if "container" in t]
    assert [{"key": "gpu", "operator": "Equal", "value": "l4", "effect": "NoSchedule"}] in tolerations


def test_the_validators_catch_mistakes(argo_validate):
    """The checks above can fail: a typo in a rendered Kubernetes or Argo object is reported."""
    docs = render()
    (role,) = by_kind(docs, "Role")
    role["rules"][0]["verb"] = ["get"]  # typo of `verbs`
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, KUBE_VERSION, strict=True)
    wt = templates(docs)["drive"]
    container = next(t for t in wt["spec"]["templates"] if "container" in t)["container"]
    container["imagee"] = container.pop("image")
    assert any("imagee" in e for e in argo_validate(wt, "WorkflowTemplate"))
