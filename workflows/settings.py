"""Cluster settings of the Argo WorkflowTemplate: images, node classes, S3, retries, limits.

:class:`WorkflowSettings` holds everything that differs between clusters; the stage graph
(:data:`stages.graph.STAGES`) holds everything that does not. Settings come from, later wins:

1. the defaults below (a generic cluster: NVIDIA GPU nodes tainted ``nvidia.com/gpu``, MinIO-style
   S3 inside the cluster);
2. a YAML or JSON file (``--settings FILE`` or ``$AVATAR_WORKFLOW_SETTINGS``) with the same field
   names as the dataclasses, e.g. ``{"images": {"train": {"tag": "v2"}}, "s3": {"bucket": "b"}}``;
3. environment variables: ``AVATAR_IMAGE_REGISTRY`` and ``AVATAR_IMAGE_TAG`` (all three images),
   ``ARGO_NAMESPACE``, ``AVATAR_WORKFLOW_S3_ENDPOINT`` (the endpoint *pods* use, which may differ
   from the one this machine uses), ``AVATAR_WORKFLOW_S3_BUCKET``.

Durations are Argo duration strings (``"90s"``, ``"30m"``, ``"6h"``); quantities are Kubernetes
quantities (``"16Gi"``, ``"500m"``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stages.errors import bad_input
from stages.graph import IMAGES, NODE_CLASSES

SETTINGS_ENV = "AVATAR_WORKFLOW_SETTINGS"
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$|^[0-9]+$")
_GPU = "nvidia.com/gpu"


@dataclass
class ImageRef:
    """One container image: ``<registry>/<repository>:<tag>``."""

    registry: str = "localhost/avatar-pipeline"
    repository: str = ""
    tag: str = "dev"

    def ref(self) -> str:
        """The full image reference."""
        return f"{self.registry}/{self.repository}:{self.tag}" if self.registry else f"{self.repository}:{self.tag}"


@dataclass
class NodeClass:
    """Where and how big the pods of one node class are.

    Attributes:
        node_selector: node labels a pod of this class requires.
        tolerations: Kubernetes tolerations (dicts: key, operator, value, effect), e.g. for the
            ``nvidia.com/gpu`` taint GPU node pools usually carry.
        requests: resource requests (``cpu``, ``memory``, ``nvidia.com/gpu``).
        limits: resource limits (GPUs must be equal in requests and limits).
        shm_size: size limit of the in-memory ``emptyDir`` at ``/dev/shm`` (PyTorch data loaders).
        scratch_size: size limit of the ``emptyDir`` at ``/scratch`` (downloaded inputs, temporaries).
        timeout: the whole node, pending time included (Argo ``timeout``; the pod's
            ``activeDeadlineSeconds``).
        pending_timeout: longest time a pod may wait to be scheduled (Argo >= 4.1
            ``pendingTimeout``); a GPU pod that never schedules fails with a clear message after it.
        priority_class: Kubernetes PriorityClass name, or empty for none.
        autoscaled: nodes of this class may be created on demand (``avatar doctor`` then only warns
            when none exist yet).
    """

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    shm_size: str = "1Gi"
    scratch_size: str = "20Gi"
    timeout: str = "4h"
    pending_timeout: str = "30m"
    priority_class: str = ""
    autoscaled: bool = False

    @property
    def gpus(self) -> int:
        """GPUs a pod of this class requests."""
        return int(self.requests.get(_GPU, self.limits.get(_GPU, "0")))


def _gpu_toleration() -> list[dict[str, str]]:
    return [{"key": _GPU, "operator": "Exists", "effect": "NoSchedule"}]


def _default_node_classes() -> dict[str, NodeClass]:
    return {
        "cpu": NodeClass(node_selector={"avatar-pipeline/node-class": "cpu"},
                         requests={"cpu": "4", "memory": "8Gi"}, limits={"memory": "16Gi"},
                         shm_size="1Gi", scratch_size="20Gi", timeout="2h", pending_timeout="20m"),
        "cheap-gpu": NodeClass(node_selector={"avatar-pipeline/node-class": "cheap-gpu"},
                               tolerations=_gpu_toleration(),
                               requests={"cpu": "4", "memory": "16Gi", _GPU: "1"},
                               limits={"memory": "24Gi", _GPU: "1"},
                               shm_size="4Gi", scratch_size="40Gi", timeout="3h", pending_timeout="30m"),
        "a100": NodeClass(node_selector={"avatar-pipeline/node-class": "a100"},
                          tolerations=_gpu_toleration(),
                          requests={"cpu": "8", "memory": "48Gi", _GPU: "1"},
                          limits={"memory": "64Gi", _GPU: "1"},
                          shm_size="16Gi", scratch_size="80Gi", timeout="6h", pending_timeout="45m"),
    }


@dataclass
class S3Settings:
    """The store every pod reads and writes (``s3://<bucket>/<prefix>``).

    Attributes:
        endpoint: S3 endpoint URL as seen from inside the cluster (``http://minio.minio:9000``);
            empty means AWS S3 itself.
        bucket: bucket name.
        prefix: key prefix inside the bucket (may be empty).
        region: S3 region.
        credentials_secret: name of the Kubernetes Secret in the workflow's namespace holding the
            keys; pods get them as ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``.
        access_key_key: key of the access key id in that Secret.
        secret_key_key: key of the secret access key in that Secret.
    """

    endpoint: str = "http://minio.minio.svc.cluster.local:9000"
    bucket: str = "avatar-pipeline"
    prefix: str = ""
    region: str = "us-east-1"
    credentials_secret: str = "avatar-pipeline-s3"
    access_key_key: str = "accessKey"
    secret_key_key: str = "secretKey"

    @property
    def store_uri(self) -> str:
        """``s3://bucket[/prefix]``: what ``--store`` is in every pod."""
        return f"s3://{self.bucket}" + (f"/{self.prefix.strip('/')}" if self.prefix.strip("/") else "")

    @property
    def artifact_endpoint(self) -> str:
        """Argo's S3 artifact ``endpoint``: host[:port] without scheme."""
        if not self.endpoint:
            return "s3.amazonaws.com"
        return re.sub(r"^https?://", "", self.endpoint).rstrip("/")

    @property
    def insecure(self) -> bool:
        """Whether Argo talks plain HTTP to the endpoint."""
        return self.endpoint.startswith("http://")


@dataclass
class RetrySettings:
    """Retries of transient failures (exit 75, killed or preempted pods); never of exit 2.

    Attributes:
        limit: retries after the first attempt.
        backoff: first wait between attempts.
        factor: multiplier of the wait per attempt.
        max_backoff: longest wait between attempts (Argo ``backoff.cap``).
    """

    limit: int = 4
    backoff: str = "30s"
    factor: int = 2
    max_backoff: str = "10m"


@dataclass
class SemaphoreSettings:
    """A ConfigMap key holding how many pods of the listed node classes may run at once
    (A100 trainings); the Helm chart creates it."""

    config_map: str = "avatar-pipeline-slots"
    key: str = "a100"
    node_classes: tuple[str, ...] = ("a100",)


@dataclass
class WorkflowSettings:
    """Everything cluster-specific about the ``avatar-pipeline`` WorkflowTemplate.

    Attributes:
        name: WorkflowTemplate name (``avatar submit`` references it).
        namespace: Kubernetes namespace of the template and its workflows.
        images: per image of :data:`stages.graph.IMAGES`.
        image_pull_policy: Kubernetes ``imagePullPolicy``.
        node_classes: per node class of :data:`stages.graph.NODE_CLASSES`.
        s3: the store.
        retry: retry policy for every stage.
        semaphore: concurrency limit for A100 pods.
        active_deadline_seconds: the whole workflow's deadline.
        ttl_after_success / ttl_after_failure: seconds a finished workflow object is kept.
        pod_gc: Argo ``podGC.strategy`` (pods of failed steps stay for ``kubectl logs`` with
            ``OnPodSuccess``).
        pod_gc_delay: ``podGC.deleteDelayDuration``.
        service_account: service account of the pods (needs the Argo executor's RBAC).
        label_prefix: prefix of the labels we put on workflows and pods.
    """

    name: str = "avatar-pipeline"
    namespace: str = "avatar"
    images: dict[str, ImageRef] = field(default_factory=lambda: {i: ImageRef(repository=i) for i in IMAGES})
    image_pull_policy: str = "IfNotPresent"
    node_classes: dict[str, NodeClass] = field(default_factory=_default_node_classes)
    s3: S3Settings = field(default_factory=S3Settings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    semaphore: SemaphoreSettings = field(default_factory=SemaphoreSettings)
    active_deadline_seconds: int = 24 * 3600
    ttl_after_success: int = 3 * 24 * 3600
    ttl_after_failure: int = 7 * 24 * 3600
    pod_gc: str = "OnPodSuccess"
    pod_gc_delay: str = "10m"
    service_account: str = "avatar-pipeline"
    label_prefix: str = "avatar-pipeline"

    def validate(self, source: str = "workflow settings") -> "WorkflowSettings":
        """Check the settings cover every image and node class of the stage graph; BadInput if not."""
        for img in IMAGES:
            if img not in self.images:
                raise bad_input(source, f"no image settings for {img!r}", f"add images.{img} (registry, repository, tag)")
        for nc in NODE_CLASSES:
            if nc not in self.node_classes:
                raise bad_input(source, f"no node class {nc!r}", f"add node_classes.{nc}")
        for name, nc in self.node_classes.items():
            for what, value in (("timeout", nc.timeout), ("pending_timeout", nc.pending_timeout)):
                if not _DURATION.match(value):
                    raise bad_input(source, f"node_classes.{name}.{what} {value!r} is not a duration",
                                    "write it like 90s, 30m or 6h")
            if nc.requests.get(_GPU) != nc.limits.get(_GPU):
                raise bad_input(source, f"node_classes.{name}: GPU request and limit differ",
                                f"set {_GPU} to the same number in requests and limits")
        for value in (self.retry.backoff, self.retry.max_backoff, self.pod_gc_delay):
            if not _DURATION.match(value):
                raise bad_input(source, f"{value!r} is not a duration", "write it like 90s, 30m or 6h")
        if not self.s3.bucket:
            raise bad_input(source, "s3.bucket is empty", "set s3.bucket to the bucket the pods use")
        return self

    def image_of(self, image: str) -> str:
        """Full reference of one of :data:`stages.graph.IMAGES`."""
        return self.images[image].ref()


# -- loading -------------------------------------------------------------------------------------


def _merge(obj: Any, values: Mapping[str, Any], where: str, source: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``values`` applied, recursing into dataclass fields
    and into dicts of dataclasses. Unknown keys are an error naming the file."""
    if not isinstance(values, Mapping):
        raise bad_input(source, f"{where or 'top level'} must be a mapping", "see docs/cluster.md for the layout")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise bad_input(source, f"unknown setting {where + key!r}",
                            f"known settings here: {', '.join(sorted(fields))}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            changes[name] = _merge(current, value, f"{where}{key}.", source)
        elif isinstance(current, dict) and current and all(dataclasses.is_dataclass(v) for v in current.values()):
            if not isinstance(value, Mapping):
                raise bad_input(source, f"{where + key} must be a mapping", "see docs/cluster.md for the layout")
            merged = dict(current)
            for k, v in value.items():
                base = merged.get(k) or type(next(iter(current.values())))()
                merged[k] = _merge(base, v, f"{where}{key}.{k}.", source)
            changes[name] = merged
        elif isinstance(current, tuple):
            changes[name] = tuple(value)
        else:
            changes[name] = value
    return dataclasses.replace(obj, **changes)


def settings_from_dict(values: Mapping[str, Any], source: str = "workflow settings") -> WorkflowSettings:
    """Defaults with ``values`` applied (the layout of the dataclasses)."""
    return _merge(WorkflowSettings(), values, "", source).validate(source)


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> WorkflowSettings:
    """Settings from defaults, then the file (``path`` or ``$AVATAR_WORKFLOW_SETTINGS``), then env.

    Raises:
        BadInput: missing or unparsable file, unknown keys, invalid values.
    """
    env = os.environ if env is None else env
    path = path or env.get(SETTINGS_ENV) or None
    values: dict[str, Any] = {}
    source = "workflow settings"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise bad_input(p, "no such settings file", f"give an existing YAML/JSON file or unset ${SETTINGS_ENV}")
        text = p.read_text()
        try:
            if p.suffix == ".json":
                values = json.loads(text)
            else:
                import yaml

                values = yaml.safe_load(text) or {}
        except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
            raise bad_input(p, f"not valid {'JSON' if p.suffix == '.json' else 'YAML'} ({str(e).splitlines()[0]})",
                            "fix the settings file") from None
    settings = _merge(WorkflowSettings(), values, "", source)
    images = dict(settings.images)
    for img, ref in images.items():
        images[img] = dataclasses.replace(ref, registry=env.get("AVATAR_IMAGE_REGISTRY", ref.registry),
                                          tag=env.get("AVATAR_IMAGE_TAG", ref.tag))
    s3 = dataclasses.replace(settings.s3, endpoint=env.get("AVATAR_WORKFLOW_S3_ENDPOINT", settings.s3.endpoint),
                             bucket=env.get("AVATAR_WORKFLOW_S3_BUCKET", settings.s3.bucket))
    settings = dataclasses.replace(settings, images=images, s3=s3,
                                   namespace=env.get("ARGO_NAMESPACE", settings.namespace))
    return settings.validate(source)


def with_image(settings: WorkflowSettings, registry: str | None = None, tag: str | None = None) -> WorkflowSettings:
    """A copy with every image's registry and/or tag replaced (``--registry``/``--tag``)."""
    images = {k: dataclasses.replace(v, registry=registry if registry is not None else v.registry,
                                     tag=tag if tag is not None else v.tag) for k, v in settings.images.items()}
    return dataclasses.replace(settings, images=images)
