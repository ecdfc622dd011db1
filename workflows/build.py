"""The Argo WorkflowTemplate ``avatar-pipeline``, built with Hera from :data:`stages.graph.STAGES`.

One container template per stage, one DAG task per stage, the task's ``depends`` = the stage's
``needs``; fan-out stages run once per shard (``withParam`` over the JSON list of shard indices
that the ingest pod writes as an output parameter). Nothing here lists the stages.

Each pod runs ``avatar stage <name> --actor {{workflow.parameters.actor}} --store s3://... [--shard N]``
in its stage's image, on its stage's node class; data moves through S3 (explicit store URI,
credentials from a Secret as environment variables). Stages skip work whose manifest matches, so
``argo retry`` and a resubmit redo only what failed.

Retries: ``retryPolicy: Always`` with the expression ``asInt(lastRetry.exitCode) != 2``: transient
failures (exit 75, OOM kills, pod errors, preempted nodes: exit code 137/143/-1) are retried with
exponential backoff; bad input (exit 2) fails at once. A pod that cannot be scheduled fails after
its node class's ``pendingTimeout`` (Argo >= 4.1; the controller marks the node failed and does not
retry it) and, on any Argo 4, after ``timeout``.
"""

from __future__ import annotations

import json
from typing import Any

from hera.workflows import DAG, Container, Parameter, Task, WorkflowTemplate, models as m

from stages.graph import BY_NAME, DRIVE_STEP, STAGES, StageDecl, pipeline_stages, topological_order
from workflows.conventions import ACTOR, ACTOR_REF, FINAL_ARTIFACTS, dump_yaml, label  # noqa: F401 (re-exported)
from workflows.helm import helm_yaml
from workflows.settings import NodeClass, WorkflowSettings

ENTRYPOINT = "pipeline"
SHARD_PARAM = "shard"
SHARDS_OUTPUT = "shards"
SHARD_SOURCE = "ingest"          # the stage whose store folder holds shards.json (StageContext.shards)
OUTPUTS_DIR = "/tmp/argo-outputs"  # where pods put files Argo collects (output parameters, artifacts)
SCRATCH = "/scratch"
RETRY_EXPRESSION = "asInt(lastRetry.exitCode) != 2"
CLUSTER_DEFAULTS = {"ingest": {"min_shards": 1}}
"""Stage settings an actor or driver gets when it is first submitted to the cluster: there each shard is a
pod, so a short clip stays in shards of ``ingest.shard_size`` frames (a 10-second clip: one pod per
fan-out stage, not eight; ``ingest.min_shards`` is for the local run's processes)."""
# The drive template (``<name>-drive``): its parameters and entry points.
DRIVER, DRIVE_NAME = "driver", "name"
DRIVER_REF, DRIVE_NAME_REF = "{{workflow.parameters.driver}}", "{{workflow.parameters.name}}"
DRIVE_VIDEO, DRIVE_MOTION = "drive-video", "drive-motion"


def sink_stages() -> list[StageDecl]:
    """Stages no other stage needs (the DAG's ends): they publish the final artifacts."""
    needed = {n for s in STAGES for n in s.needs}
    return [s for s in STAGES if s.name not in needed]


def stage_command(decl: StageDecl, settings: WorkflowSettings, entry_ref: str = ACTOR_REF) -> tuple[list[str], list[str]]:
    """The container's ``command`` and ``args`` for a stage's pod.

    Plain stages run ``avatar stage NAME ...`` directly. The shard source also writes the JSON
    list of shard indices to ``OUTPUTS_DIR/shards.json`` (its output parameter), and each sink
    copies the final avatar, preview and report to ``OUTPUTS_DIR`` (its output artifacts); those
    two run through ``sh -c`` with the actor and store as positional arguments (never spliced
    into the script), so the stage's exit code (2 or 75) is the pod's.
    """
    if decl.name == DRIVE_STEP.name:  # the drive render (drive template): actor, drive name, driver entry
        return ["avatar"], ["drive-step", "--actor", ACTOR_REF, "--name", DRIVE_NAME_REF, "--driver", DRIVER_REF,
                            "--store", settings.s3.store_uri]
    stage_args = ["stage", decl.name, "--actor", entry_ref, "--store", settings.s3.store_uri]
    if decl.fan_out:
        stage_args += ["--shard", "{{inputs.parameters.%s}}" % SHARD_PARAM]
    post = []
    if decl.name == SHARD_SOURCE:
        post.append(f'avatar workflow shard-list --actor "$1" --store "$2" --out {OUTPUTS_DIR}/shards.json')
    if decl in sink_stages() and entry_ref == ACTOR_REF:
        post.append(f'avatar workflow collect --actor "$1" --store "$2" --out {OUTPUTS_DIR}')
    if not post:
        return ["avatar"], stage_args
    script = " && ".join([f'avatar stage {decl.name} --actor "$1" --store "$2"'] + post)
    return ["sh", "-c"], [script, "avatar-" + decl.name, entry_ref, settings.s3.store_uri]


POD_LOCK_WAIT_S = "150"  # > 2 x the default lease (60 s): a stale lease expires within it


def _env(settings: WorkflowSettings, decl: StageDecl) -> list[m.EnvVar]:
    """The pod's environment: the S3 connection (keys from the Secret), scratch, code version."""
    s3 = settings.s3

    def secret(key: str) -> m.EnvVarSource:
        return m.EnvVarSource(secret_key_ref=m.SecretKeySelector(name=s3.credentials_secret, key=key))

    return [
        m.EnvVar(name="AVATAR_S3_ENDPOINT", value=s3.endpoint),
        m.EnvVar(name="AWS_REGION", value=s3.region),
        m.EnvVar(name="AWS_ACCESS_KEY_ID", value_from=secret(s3.access_key_key)),
        m.EnvVar(name="AWS_SECRET_ACCESS_KEY", value_from=secret(s3.secret_key_key)),
        m.EnvVar(name="AVATAR_SCRATCH", value=SCRATCH),
        m.EnvVar(name="AVATAR_CODE_VERSION", value=settings.images[decl.image].tag),
        m.EnvVar(name="PYTHONUNBUFFERED", value="1"),
        # A retried pod of one that was killed finds the dead pod's lease on the actor still held: it waits
        # for the lease to expire (stages.runner.lock, 60 s) instead of exiting 75 and using up a retry.
        m.EnvVar(name="AVATAR_LOCK_WAIT", value=POD_LOCK_WAIT_S),
    ]


def _artifact_key(settings: WorkflowSettings, name: str) -> str:
    """Where Argo puts a final artifact: beside the actor's data, one folder per workflow run."""
    base = f"actors/{ACTOR_REF}/argo/{{{{workflow.name}}}}/{name}"
    prefix = settings.s3.prefix.strip("/")
    return f"{prefix}/{base}" if prefix else base


def _outputs(decl: StageDecl, settings: WorkflowSettings, entry_ref: str = ACTOR_REF) -> list[Any]:
    out: list[Any] = []
    if decl.name == SHARD_SOURCE:
        out.append(Parameter(name=SHARDS_OUTPUT, value_from=m.ValueFrom(path=f"{OUTPUTS_DIR}/shards.json"),
                             description="JSON list of shard indices"))
    if decl in sink_stages() and entry_ref == ACTOR_REF:
        s3 = settings.s3
        for name, rel, archived in FINAL_ARTIFACTS:
            out.append(m.Artifact(
                name=name, path=f"{OUTPUTS_DIR}/{rel}",
                archive=None if archived else m.ArchiveStrategy(none=m.NoneStrategy()),
                s3=m.S3Artifact(
                    endpoint=s3.artifact_endpoint, insecure=s3.insecure, bucket=s3.bucket, region=s3.region,
                    key=_artifact_key(settings, rel + (".tgz" if archived else "")),
                    access_key_secret=m.SecretKeySelector(name=s3.credentials_secret, key=s3.access_key_key),
                    secret_key_secret=m.SecretKeySelector(name=s3.credentials_secret, key=s3.secret_key_key))))
    return out


def _resources(nc: NodeClass) -> m.ResourceRequirements:
    return m.ResourceRequirements(requests={k: m.Quantity(v) for k, v in nc.requests.items()} or None,
                                  limits={k: m.Quantity(v) for k, v in nc.limits.items()} or None)


def stage_template(decl: StageDecl, settings: WorkflowSettings, entry_ref: str = ACTOR_REF) -> Container:
    """The container template of one stage (registered on the active WorkflowTemplate context);
    ``entry_ref`` is the store entry its pod works on (the actor, or ``drivers/<driver>``)."""
    nc = settings.node_classes[decl.node_class]
    command, args = stage_command(decl, settings, entry_ref)
    retry = settings.retry
    semaphores = None
    if decl.node_class in settings.semaphore.node_classes:
        semaphores = m.Synchronization(semaphores=[m.SemaphoreRef(config_map_key_ref=m.ConfigMapKeySelector(
            name=settings.semaphore.config_map, key=settings.semaphore.key))])
    return Container(
        name=decl.name,
        image=settings.image_of(decl.image),
        image_pull_policy=settings.image_pull_policy,
        command=command,
        args=args,
        inputs=[Parameter(name=SHARD_PARAM, description="shard index")] if decl.fan_out else None,
        outputs=_outputs(decl, settings, entry_ref) or None,
        env=_env(settings, decl),
        resources=_resources(nc),
        node_selector=dict(nc.node_selector),
        tolerations=[m.Toleration(**t) for t in nc.tolerations],
        priority_class_name=nc.priority_class or None,
        volumes=[m.Volume(name="dshm", empty_dir=m.EmptyDirVolumeSource(medium="Memory", size_limit=m.Quantity(nc.shm_size))),
                 m.Volume(name="scratch", empty_dir=m.EmptyDirVolumeSource(size_limit=m.Quantity(nc.scratch_size)))],
        volume_mounts=[m.VolumeMount(name="dshm", mount_path="/dev/shm"),
                       m.VolumeMount(name="scratch", mount_path=SCRATCH)],
        retry_strategy=m.RetryStrategy(
            limit=m.IntOrString(retry.limit), retry_policy="Always", expression=RETRY_EXPRESSION,
            backoff=m.Backoff(duration=retry.backoff, factor=m.IntOrString(retry.factor), cap=retry.max_backoff)),
        timeout=nc.timeout,
        synchronization=semaphores,
        labels={label(settings, "actor"): ACTOR_REF, label(settings, "stage"): decl.name,
                label(settings, "node-class"): decl.node_class},
        annotations={"workflows.argoproj.io/display-name": decl.name, f"{settings.label_prefix}/summary": decl.summary},
    )


def _task(decl: StageDecl) -> Task:
    kwargs: dict[str, Any] = {}
    if decl.needs:
        kwargs["depends"] = " && ".join(decl.needs)
    if decl.fan_out:
        kwargs["with_param"] = "{{tasks.%s.outputs.parameters.%s}}" % (SHARD_SOURCE, SHARDS_OUTPUT)
        kwargs["arguments"] = [Parameter(name=SHARD_PARAM, value="{{item}}")]
    return Task(name=decl.name, template=decl.name, **kwargs)


def build_template(settings: WorkflowSettings) -> WorkflowTemplate:
    """The Hera WorkflowTemplate of the whole pipeline for these settings."""
    settings.validate()
    if any(s.fan_out for s in STAGES) and SHARD_SOURCE not in BY_NAME:
        raise ValueError(f"fan-out stages need the {SHARD_SOURCE!r} stage that plans the shards")
    order = topological_order()
    with WorkflowTemplate(
        name=settings.name,
        namespace=settings.namespace,
        labels={"app.kubernetes.io/name": "avatar-pipeline", "app.kubernetes.io/component": "workflow-template"},
        annotations={"workflows.argoproj.io/description":
                     "Talking-head video in, FlashAvatar out: " + " -> ".join(s.name for s in order),
                     "workflows.argoproj.io/version": ">= 4.0.0"},
        entrypoint=ENTRYPOINT,
        arguments=[Parameter(name=ACTOR, description="actor name: the video is at actors/<actor>/input/video.mp4")],
        service_account_name=settings.service_account,
        active_deadline_seconds=settings.active_deadline_seconds,
        pod_gc=m.PodGC(strategy=settings.pod_gc, delete_delay_duration=settings.pod_gc_delay),
        ttl_strategy=m.TTLStrategy(seconds_after_success=settings.ttl_after_success,
                                   seconds_after_failure=settings.ttl_after_failure),
        workflow_metadata=m.WorkflowMetadata(
            labels={label(settings, "pipeline"): settings.name},
            labels_from={label(settings, "actor"): m.LabelValueFrom(expression=f"workflow.parameters.{ACTOR}")}),
    ) as wt:
        for decl in order:
            stage_template(decl, settings)
        with DAG(name=ENTRYPOINT):
            for decl in order:
                _task(decl)
    return wt


def drive_template_name(settings: WorkflowSettings) -> str:
    """The drive WorkflowTemplate's name: ``<name>-drive``."""
    return f"{settings.name}-drive"


def build_drive_template(settings: WorkflowSettings) -> WorkflowTemplate:
    """The drive WorkflowTemplate, from the ``drive`` pipeline of :data:`stages.graph.PIPELINES`.

    Two entry points (a Workflow picks one with ``spec.entrypoint``): ``drive-video`` runs the
    driver's stages (ingest, landmarks, calibrate, track; fan-out as in the main template) on the
    entry ``drivers/<driver>``, then the drive step; ``drive-motion`` runs the drive step alone on a
    motion file uploaded to ``actors/<actor>/drive/<name>/input/``. Parameters: ``actor``,
    ``name`` (the drive), ``driver`` (the driver entry's name; empty for a motion)."""
    settings.validate()
    driver_stages = pipeline_stages("drive")
    entry = "drivers/" + DRIVER_REF
    with WorkflowTemplate(
        name=drive_template_name(settings),
        namespace=settings.namespace,
        labels={"app.kubernetes.io/name": "avatar-pipeline", "app.kubernetes.io/component": "drive-template"},
        annotations={"workflows.argoproj.io/description":
                     "Drive a trained avatar: driver video (" + " -> ".join(s.name for s in driver_stages)
                     + " -> drive) or motion file (drive)",
                     "workflows.argoproj.io/version": ">= 4.0.0"},
        entrypoint=DRIVE_VIDEO,
        arguments=[Parameter(name=ACTOR, description="the actor whose trained avatar is driven"),
                   Parameter(name=DRIVE_NAME, description="the drive: outputs under actors/<actor>/drive/<name>/"),
                   Parameter(name=DRIVER, value="", description="the driver entry drivers/<driver>/ (video drives)")],
        service_account_name=settings.service_account,
        active_deadline_seconds=settings.active_deadline_seconds,
        pod_gc=m.PodGC(strategy=settings.pod_gc, delete_delay_duration=settings.pod_gc_delay),
        ttl_strategy=m.TTLStrategy(seconds_after_success=settings.ttl_after_success,
                                   seconds_after_failure=settings.ttl_after_failure),
        workflow_metadata=m.WorkflowMetadata(
            labels={label(settings, "pipeline"): drive_template_name(settings)},
            labels_from={label(settings, "actor"): m.LabelValueFrom(expression=f"workflow.parameters.{ACTOR}")}),
    ) as wt:
        for decl in driver_stages:
            stage_template(decl, settings, entry)
        stage_template(DRIVE_STEP, settings)
        with DAG(name=DRIVE_VIDEO):
            for decl in driver_stages:
                _task(decl)
            Task(name=DRIVE_STEP.name, template=DRIVE_STEP.name, depends=" && ".join(DRIVE_STEP.needs))
        with DAG(name=DRIVE_MOTION):
            Task(name=DRIVE_STEP.name, template=DRIVE_STEP.name)
    return wt


def build_dict(settings: WorkflowSettings, pipeline: str = "avatar") -> dict[str, Any]:
    """The WorkflowTemplate as a plain dict (what ``kubectl apply`` takes); ``pipeline="drive"``
    gives the drive template.

    Adds what Hera 7.1's models lack: ``pendingTimeout`` per template (Argo >= 4.1; older
    controllers ignore it and rely on ``timeout``); keeps empty ``nodeSelector``, ``tolerations``
    and resource maps (one shape for every settings, as the Helm form has)."""
    doc = (build_drive_template(settings) if pipeline == "drive" else build_template(settings)).to_dict()
    for tmpl in doc["spec"]["templates"]:
        decl = BY_NAME.get(tmpl["name"]) or (DRIVE_STEP if tmpl["name"] == DRIVE_STEP.name else None)
        if decl is not None and "container" in tmpl:
            nc = settings.node_classes[decl.node_class]
            tmpl["pendingTimeout"] = nc.pending_timeout
            tmpl["container"]["resources"] = {"limits": dict(nc.limits), "requests": dict(nc.requests)}
            tmpl.setdefault("nodeSelector", {})
            tmpl.setdefault("tolerations", [])
    return doc


def render_yaml(settings: WorkflowSettings, for_helm: bool = False, pipeline: str = "avatar") -> str:
    """The WorkflowTemplate (``pipeline="drive"``: the drive template) as YAML; with ``for_helm`` the
    cluster-specific fields are Helm value references (see :mod:`workflows.helm`) and Argo's own
    ``{{...}}`` are escaped for Helm."""
    doc = build_dict(settings, pipeline)
    if for_helm:
        return helm_yaml(doc, settings)
    return dump_yaml(doc)




def check_actor(actor: str) -> str:
    """An actor name usable as a store folder, a label value and part of a workflow name: the one
    rule of :func:`stages.names.check_actor`; BadInput if not."""
    from stages.names import check_actor as check

    return check(actor)


def workflow_for(settings: WorkflowSettings, actor: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The Workflow that ``avatar submit`` creates: a reference to the template plus the actor."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": f"{settings.name}-{actor}-"[:57], "namespace": settings.namespace,
                     "labels": {label(settings, "actor"): actor, label(settings, "pipeline"): settings.name,
                                **(labels or {})}},
        "spec": {"workflowTemplateRef": {"name": settings.name},
                 "arguments": {"parameters": [{"name": ACTOR, "value": actor}]}},
    }


def shard_indices_json(indices: list[int]) -> str:
    """The ``shards`` output parameter: a JSON list of shard indices (``withParam`` input)."""
    return json.dumps([int(i) for i in indices])


def drive_workflow_for(settings: WorkflowSettings, actor: str, name: str, driver: str | None) -> dict[str, Any]:
    """The Workflow that ``avatar submit-drive`` creates: the drive template, ``drive-video`` with a
    driver entry or ``drive-motion`` without."""
    tname = drive_template_name(settings)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": f"{tname}-{actor}-"[:57], "namespace": settings.namespace,
                     "labels": {label(settings, "actor"): actor, label(settings, "pipeline"): tname}},
        "spec": {"workflowTemplateRef": {"name": tname}, "entrypoint": DRIVE_VIDEO if driver else DRIVE_MOTION,
                 "arguments": {"parameters": [{"name": ACTOR, "value": actor}, {"name": DRIVE_NAME, "value": name},
                                              {"name": DRIVER, "value": driver or ""}]}},
    }
