"""The WorkflowTemplate built from the stage graph: valid for Argo 4.1.2, and the graph exactly."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from stages.errors import BadInput
from stages.graph import BY_NAME, STAGES
from workflows.build import (ACTOR_REF, RETRY_EXPRESSION, SHARD_SOURCE, build_dict, render_yaml, stage_command,
                             workflow_for)
from workflows.settings import WorkflowSettings, load_settings, settings_from_dict


def _templates(doc):
    return {t["name"]: t for t in doc["spec"]["templates"]}


def _custom() -> WorkflowSettings:
    return settings_from_dict({
        "namespace": "render-farm",
        "images": {"train": {"registry": "ghcr.io/acme", "repository": "avatar-train", "tag": "v1.2.3"}},
        "node_classes": {"a100": {"priority_class": "gpu-high", "node_selector": {"pool": "a100"},
                                  "requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}},
        "s3": {"endpoint": "", "bucket": "avatars", "prefix": "team/a", "region": "eu-west-1"},
        "retry": {"limit": 2}, "semaphore": {"config_map": "slots", "key": "trainings"},
    })


@pytest.mark.parametrize("settings", [WorkflowSettings(), _custom()], ids=["defaults", "custom"])
def test_template_validates_against_argo_schema_and_crd(settings, argo_validate):
    doc = yaml.safe_load(render_yaml(settings))
    assert doc == build_dict(settings)
    assert argo_validate(doc) == []


def test_validators_reject_typos_and_bad_enums(argo_validate):
    doc = build_dict(WorkflowSettings())
    typo = yaml.safe_load(yaml.safe_dump(doc))
    typo["spec"]["templates"][0]["container"]["imagee"] = typo["spec"]["templates"][0]["container"].pop("image")
    assert any("imagee" in e and e.startswith("schema.json") for e in argo_validate(typo))
    bad_enum = yaml.safe_load(yaml.safe_dump(doc))
    bad_enum["spec"]["templates"][0]["retryStrategy"]["retryPolicy"] = "Sometimes"
    assert any(e.startswith("CRD") and "Sometimes" in e for e in argo_validate(bad_enum))


def test_dag_equals_stage_graph():
    doc = build_dict(WorkflowSettings())
    (dag,) = [t for t in doc["spec"]["templates"] if "dag" in t]
    assert doc["spec"]["entrypoint"] == dag["name"]
    tasks = {t["name"]: t for t in dag["dag"]["tasks"]}
    assert list(tasks) == [s.name for s in STAGES]
    ingest_outputs = {p["name"] for p in _templates(doc)[SHARD_SOURCE]["outputs"]["parameters"]}
    for decl in STAGES:
        t = tasks[decl.name]
        assert t["template"] == decl.name
        deps = [d.strip() for d in t.get("depends", "").split("&&") if d.strip()]
        assert deps == list(decl.needs)
        if decl.fan_out:
            assert t["withParam"] == "{{tasks.%s.outputs.parameters.shards}}" % SHARD_SOURCE
            assert "shards" in ingest_outputs
            assert t["arguments"]["parameters"] == [{"name": "shard", "value": "{{item}}"}]
        else:
            assert "withParam" not in t and "arguments" not in t
    # every stage template exists and no template is left over besides the DAG
    assert set(_templates(doc)) == set(BY_NAME) | {dag["name"]}


def test_pod_placement_resources_and_retries_follow_settings():
    s = _custom()
    doc = build_dict(s)
    for decl in STAGES:
        t = _templates(doc)[decl.name]
        nc = s.node_classes[decl.node_class]
        assert t["container"]["image"] == s.images[decl.image].ref()
        assert t["nodeSelector"] == nc.node_selector
        assert t["tolerations"] == nc.tolerations
        assert t["container"]["resources"]["requests"] == nc.requests
        assert t["timeout"] == nc.timeout and t["pendingTimeout"] == nc.pending_timeout
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": nc.shm_size}} in t["volumes"]
        assert {"mountPath": "/dev/shm", "name": "dshm"} in t["container"]["volumeMounts"]
        r = t["retryStrategy"]
        assert r["retryPolicy"] == "Always" and r["expression"] == RETRY_EXPRESSION and r["limit"] == 2
        assert t["metadata"]["labels"]["avatar-pipeline/actor"] == ACTOR_REF
        sem = t.get("synchronization", {}).get("semaphores")
        if decl.node_class == "a100":
            assert sem == [{"configMapKeyRef": {"name": "slots", "key": "trainings"}}]
            assert t["priorityClassName"] == "gpu-high"
        else:
            assert sem is None
        env = {e["name"]: e for e in t["container"]["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "avatar-pipeline-s3", "key": "accessKey"}
        assert env["AVATAR_S3_ENDPOINT"]["value"] == ""
        # a retry of a killed pod outwaits the dead pod's lease (2 leases and more) rather than exiting 75
        from stages.runner.lock import lease_seconds

        assert float(env["AVATAR_LOCK_WAIT"]["value"]) > 2 * lease_seconds()
        assert s.s3.store_uri == "s3://avatars/team/a" and s.s3.store_uri in t["container"]["args"]
    gpu = [d for d in STAGES if s.node_classes[d.node_class].gpus]
    assert gpu and all(_templates(doc)[d.name]["tolerations"][0]["key"] == "nvidia.com/gpu" for d in gpu)
    spec = doc["spec"]
    assert spec["activeDeadlineSeconds"] == s.active_deadline_seconds
    assert spec["podGC"]["strategy"] == "OnPodSuccess" and spec["ttlStrategy"]["secondsAfterFailure"] > 0
    assert spec["workflowMetadata"]["labelsFrom"]["avatar-pipeline/actor"] == {"expression": "workflow.parameters.actor"}


@pytest.mark.parametrize("code,retried", [("2", False), ("75", True), ("137", True), ("-1", True), ("1", True)])
def test_retry_expression_skips_bad_input_only(code, retried):
    # Argo's expr: asInt(lastRetry.exitCode) != 2; evaluate the same text with Python's semantics
    expr = RETRY_EXPRESSION.replace("asInt(lastRetry.exitCode)", f"int({code!r})")
    assert eval(expr, {"__builtins__": {"int": int}}) is retried


def test_pod_commands_parse_with_the_real_cli():
    """Every pod's ``avatar ...`` invocation parses with the CLI the images ship."""
    import shlex

    import typer.main

    from stages.cli import app

    group = typer.main.get_command(app)
    s = WorkflowSettings()
    for decl in STAGES:
        command, args = stage_command(decl, s)
        args = [a.replace(ACTOR_REF, "roman").replace("{{inputs.parameters.shard}}", "0") for a in args]
        if command == ["avatar"]:
            invocations = [args]
        else:
            assert command == ["sh", "-c"]
            script, _, actor, store = args
            assert actor == "roman" and store == s.s3.store_uri
            invocations = [shlex.split(part.replace('"$1"', "a").replace('"$2"', store))[1:]
                           for part in script.split(" && ")]
            assert invocations[0][:2] == ["stage", decl.name]
        for inv in invocations:
            ctx = group.make_context("avatar", list(inv), resilient_parsing=False)
            sub_name, sub, rest = group.resolve_command(ctx, list(inv))
            if hasattr(sub, "resolve_command"):  # a command group such as `workflow`
                sub_ctx = sub.make_context(sub_name, list(rest))
                _, sub, rest = sub.resolve_command(sub_ctx, list(rest))
            sub.make_context(sub_name, list(rest))  # raises on unknown options


def test_submitted_workflow_validates(argo_validate):
    wf = workflow_for(WorkflowSettings(), "roman")
    assert argo_validate(wf) == []
    assert wf["spec"]["workflowTemplateRef"] == {"name": "avatar-pipeline"}


def test_settings_file_and_env(tmp_path):
    f = tmp_path / "cluster.yaml"
    f.write_text("namespace: prod\nimages:\n  masks:\n    tag: m7\ns3:\n  bucket: b1\n")
    s = load_settings(f, env={"AVATAR_IMAGE_REGISTRY": "reg.example/x", "ARGO_NAMESPACE": "prod2"})
    assert s.namespace == "prod2" and s.s3.bucket == "b1"
    assert s.images["masks"].ref() == "reg.example/x/masks:m7"
    assert s.images["tracker"].ref() == "reg.example/x/tracker:dev"
    f.write_text("s3:\n  buckett: b1\n")
    with pytest.raises(BadInput, match=r"cluster.yaml.*buckett"):
        load_settings(f, env={})
    with pytest.raises(BadInput, match="GPU request and limit differ"):
        settings_from_dict({"node_classes": {"a100": {"limits": {"nvidia.com/gpu": "4"}}}})
    assert dataclasses.asdict(load_settings(None, env={})) == dataclasses.asdict(WorkflowSettings())


def test_cli_render_writes_the_same_yaml(tmp_path):
    from stages.cli import main

    out = tmp_path / "wt.yaml"
    assert main(["workflow", "render", "--out", str(out), "--tag", "abc123"]) == 0
    from workflows.settings import with_image

    assert out.read_text() == render_yaml(with_image(load_settings(None, env={}), tag="abc123"))
    assert "tracker:abc123" in out.read_text()
