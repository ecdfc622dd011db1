"""``avatar doctor``: is this cluster ready to run the pipeline? Read-only checks through the
Kubernetes API (kubeconfig) and the S3 store, each finding with its fix.

Checks: the namespace exists; Argo's Workflow and WorkflowTemplate CRDs are installed; the
``avatar-pipeline`` WorkflowTemplate is installed (and uses the images these settings name); the
service account, S3 credentials Secret and semaphore ConfigMap the template references exist;
every node class has schedulable nodes that match its nodeSelector, whose taints it tolerates,
with allocatable GPUs when it wants them; the S3 bucket is reachable from here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stages.errors import EXIT_BAD_INPUT, EXIT_TRANSIENT
from stages.graph import STAGES
from workflows.settings import NodeClass, WorkflowSettings

OK, WARN, FAIL = "ok", "warn", "FAIL"
_GPU = "nvidia.com/gpu"
REQUEST_TIMEOUT = (5, 20)


@dataclass
class Finding:
    """One check's result.

    Attributes:
        check: what was checked (``namespace``, ``crd``, ``template``, ``nodes:a100``, ``s3``, ...).
        level: ``ok``, ``warn`` (works, but look) or ``FAIL`` (blocking: the pipeline cannot run).
        message: what was found.
        fix: what to do about it (empty when ok).
        unreachable: the check could not reach the cluster or store (a transient condition).
    """

    check: str
    level: str
    message: str
    fix: str = ""
    unreachable: bool = False


def exit_code(findings: list[Finding]) -> int:
    """0 without blocking findings; 75 when everything blocking was 'unreachable'; else 2."""
    blocking = [f for f in findings if f.level == FAIL]
    if not blocking:
        return 0
    return EXIT_TRANSIENT if all(f.unreachable for f in blocking) else EXIT_BAD_INPUT


def format_findings(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.level:4s}  {f.check:18s} {f.message}")
        if f.fix:
            lines.append(f"{'':6s}{'':18s} fix: {f.fix}")
    n_fail = sum(f.level == FAIL for f in findings)
    n_warn = sum(f.level == WARN for f in findings)
    lines.append(f"{n_fail} blocking, {n_warn} warnings" + ("" if n_fail else ": ready to `avatar submit`"))
    return "\n".join(lines)


def api_client(kubeconfig: Path | None, context: str | None):
    """A Kubernetes ApiClient from the kubeconfig (or the in-cluster service account), without
    urllib3's silent retries so an unreachable API server is reported quickly."""
    from kubernetes import client, config

    cfg = client.Configuration()
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if path is None and not Path("~/.kube/config").expanduser().is_file() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
    cfg.retries = False
    return client.ApiClient(configuration=cfg)


def _status(e: Exception) -> int:
    return int(getattr(e, "status", 0) or 0)


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, str]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == (taint.get("value") or ""):
            return True
    return False


def check_nodes(name: str, nc: NodeClass, nodes: list[dict[str, Any]]) -> Finding:
    """Does node class ``name`` have somewhere to run? ``nodes``: the API's node objects as dicts."""
    check = f"nodes:{name}"
    selector = nc.node_selector
    matching = [n for n in nodes if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]
    sel = ",".join(f"{k}={v}" for k, v in selector.items()) or "(any node)"
    label_fix = (f"label nodes for this class (kubectl label node NODE {' '.join(f'{k}={v}' for k, v in selector.items())}) "
                 f"or change node_classes.{name}.node_selector in the settings and the chart values")
    if not matching:
        level = WARN if nc.autoscaled else FAIL
        return Finding(check, level, f"no node matches {sel}" + (" (autoscaled: may appear on demand)" if nc.autoscaled else ""),
                       "" if nc.autoscaled else label_fix)
    usable, blocked = [], []
    for n in matching:
        spec = n.get("spec") or {}
        bad = [t for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")
               and not _tolerated(t, nc.tolerations)]
        if spec.get("unschedulable") or bad:
            blocked.append((n["metadata"]["name"], "cordoned" if spec.get("unschedulable") else
                            "taint " + ", ".join(f"{t.get('key')}={t.get('value') or ''}:{t.get('effect')}" for t in bad)))
        else:
            usable.append(n)
    if not usable:
        what = "; ".join(f"{a} ({b})" for a, b in blocked)
        return Finding(check, FAIL, f"{len(matching)} node(s) match {sel} but none accepts these pods: {what}",
                       f"add tolerations for those taints to node_classes.{name}.tolerations, or uncordon the nodes")
    gpus = [int(str(((n.get("status") or {}).get("allocatable") or {}).get(_GPU, "0"))) for n in usable]
    desc = f"{len(usable)} node(s) match {sel}"
    if nc.gpus:
        fitting = sum(g // nc.gpus for g in gpus)
        if not any(g >= nc.gpus for g in gpus):
            return Finding(check, FAIL, f"{desc} but none has {nc.gpus} allocatable {_GPU} (have {gpus})",
                           "install the NVIDIA device plugin or GPU operator on those nodes, or lower the class's GPU "
                           "request")
        return Finding(check, OK, f"{desc}, {sum(gpus)} allocatable GPUs: room for {fitting} pod(s) at once")
    return Finding(check, OK, desc)


def _images_in(template: dict[str, Any]) -> set[str]:
    return {t["container"]["image"] for t in template.get("spec", {}).get("templates", []) if "container" in t}


def run_doctor(settings: WorkflowSettings, kubeconfig: Path | None = None, context: str | None = None,
               store_uri: str | None = None, check_s3: Callable[[str], Finding] | None = None) -> list[Finding]:
    """Run every check; never raises for cluster problems (they become findings)."""
    findings: list[Finding] = []
    ns = settings.namespace
    try:
        api = api_client(kubeconfig, context)
    except Exception as e:  # ConfigException, missing file, bad YAML
        findings.append(Finding("kubeconfig", FAIL, f"cannot load a kubeconfig ({type(e).__name__}: {e})",
                                "set KUBECONFIG or pass --kubeconfig FILE [--context NAME]"))
        findings.append((check_s3 or check_bucket)(store_uri or settings.s3.store_uri))
        return findings
    findings.extend(_cluster_findings(api, settings, ns))
    findings.append((check_s3 or check_bucket)(store_uri or settings.s3.store_uri))
    return findings


def _cluster_findings(api, settings: WorkflowSettings, ns: str) -> list[Finding]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    core = client.CoreV1Api(api)
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    server = api.configuration.host
    out: list[Finding] = []
    kw = {"_request_timeout": REQUEST_TIMEOUT}

    def get(fn, *args):
        # raw JSON: no model deserialisation (fast for CRDs, tolerant of newer API fields)
        return json.loads(fn(*args, _preload_content=False, **kw).data)

    try:
        get(core.read_namespace, ns)
        out.append(Finding("namespace", OK, f"namespace {ns!r} exists"))
    except ApiException as e:
        if _status(e) == 404:
            out.append(Finding("namespace", FAIL, f"namespace {ns!r} does not exist",
                               f"kubectl create namespace {ns} (or install the chart with --create-namespace)"))
        elif _status(e) in (401, 403):
            return [Finding("access", FAIL, f"the API server at {server} refused our credentials ({_status(e)})",
                            "refresh the kubeconfig credentials (e.g. your cloud CLI's get-credentials) or pick "
                            "another --context")]
        else:
            out.append(Finding("namespace", FAIL, f"reading namespace {ns!r} failed ({_status(e)} {e.reason})",
                               "check the API server", unreachable=_status(e) >= 500))
    except (HTTPError, OSError) as e:
        return [Finding("cluster", FAIL, f"API server {server} unreachable ({type(e).__name__})",
                        "check the kubeconfig's server, VPN or port-forward, then rerun", unreachable=True)]

    for crd in ("workflows.argoproj.io", "workflowtemplates.argoproj.io"):
        try:
            obj = get(ext.read_custom_resource_definition, crd)
            versions = [v["name"] for v in obj["spec"]["versions"] if v.get("served")]
            if "v1alpha1" in versions:
                out.append(Finding("argo-crd", OK, f"{crd} installed"))
            else:
                out.append(Finding("argo-crd", FAIL, f"{crd} serves {versions}, not v1alpha1",
                                   "install Argo Workflows 4.x"))
        except ApiException as e:
            out.append(Finding("argo-crd", FAIL, f"{crd} not installed ({_status(e)})",
                               "install Argo Workflows 4.x (its CRDs and controller) into the cluster"))

    try:
        wt = get(custom.get_namespaced_custom_object, "argoproj.io", "v1alpha1", ns, "workflowtemplates", settings.name)
        from workflows.build import build_dict

        want, have = _images_in(build_dict(settings)), _images_in(wt)
        if want == have:
            out.append(Finding("template", OK, f"WorkflowTemplate {settings.name!r} installed with the expected images"))
        else:
            out.append(Finding("template", WARN, f"WorkflowTemplate {settings.name!r} uses images "
                               f"{sorted(have - want)} where these settings say {sorted(want - have)}",
                               "upgrade the chart (helm upgrade ... --set image tags) if the cluster should run the "
                               "new images"))
    except ApiException as e:
        out.append(Finding("template", FAIL, f"WorkflowTemplate {settings.name!r} not installed in {ns!r} ({_status(e)})",
                           f"helm install avatar-pipeline charts/avatar-pipeline -n {ns}"))

    for check, fn, name, fix in (
            ("service-account", core.read_namespaced_service_account, settings.service_account,
             "install the chart (it creates the service account and its RBAC)"),
            ("s3-secret", core.read_namespaced_secret, settings.s3.credentials_secret,
             f"kubectl -n {ns} create secret generic {settings.s3.credentials_secret} "
             f"--from-literal={settings.s3.access_key_key}=... --from-literal={settings.s3.secret_key_key}=..."),
            ("semaphore", core.read_namespaced_config_map, settings.semaphore.config_map,
             "install the chart (it creates the semaphore ConfigMap)")):
        try:
            obj = get(fn, name, ns)
        except ApiException as e:
            level = WARN if _status(e) == 403 else FAIL
            msg = f"cannot read {name!r} (403), not verified" if _status(e) == 403 else f"{name!r} not found in {ns!r}"
            out.append(Finding(check, level, msg, fix if level == FAIL else ""))
            continue
        data = obj.get("data") or {}
        if check == "s3-secret":
            missing = [k for k in (settings.s3.access_key_key, settings.s3.secret_key_key) if k not in data]
            out.append(Finding(check, FAIL, f"secret {name!r} lacks keys {missing}", fix) if missing
                       else Finding(check, OK, f"secret {name!r} has the S3 keys"))
        elif check == "semaphore":
            value = str(data.get(settings.semaphore.key, ""))
            if not value.isdigit() or int(value) < 1:
                out.append(Finding(check, FAIL, f"ConfigMap {name!r} key {settings.semaphore.key!r} is {value!r}, not a "
                                   "positive number", f"set it to the number of concurrent A100 pods allowed"))
            else:
                out.append(Finding(check, OK, f"{value} concurrent {'/'.join(settings.semaphore.node_classes)} pod(s)"))
        else:
            out.append(Finding(check, OK, f"{name!r} exists"))

    try:
        nodes = get(core.list_node).get("items", [])
    except ApiException as e:
        out.append(Finding("nodes", WARN, f"cannot list nodes ({_status(e)}), node classes not verified",
                           "ask for read access to nodes, or check node pools yourself"))
        return out
    used = sorted({s.node_class for s in STAGES})
    for name in used:
        out.append(check_nodes(name, settings.node_classes[name], nodes))
    return out


def check_bucket(store_uri: str) -> Finding:
    """Can this machine reach the bucket with its S3 settings?"""
    if not store_uri.startswith("s3://"):
        return Finding("s3", WARN, f"store {store_uri} is not S3", "pods need an s3:// store")
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from stages.store.s3 import S3Store

    bucket, _, prefix = store_uri[len("s3://"):].partition("/")
    try:
        st = S3Store(bucket, prefix, max_attempts=1, connect_timeout=3.0, read_timeout=10.0)
        st.client.head_bucket(Bucket=bucket)
        return Finding("s3", OK, f"bucket {bucket!r} reachable at {st.endpoint or 'AWS'}")
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return Finding("s3", FAIL, f"bucket {bucket!r} does not exist", "create it (e.g. mc mb, aws s3 mb) or fix "
                           "s3.bucket in the settings")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return Finding("s3", FAIL, f"bucket {bucket!r}: access denied ({code})",
                           "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY here and the bucket policy")
        return Finding("s3", FAIL, f"bucket {bucket!r}: {code}", "check the S3 endpoint", unreachable=code.startswith("5"))
    except NoCredentialsError:
        return Finding("s3", FAIL, f"no S3 credentials here for bucket {bucket!r}",
                       "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the S3 config file)")
    except (BotoCoreError, OSError) as e:
        return Finding("s3", FAIL, f"S3 endpoint unreachable ({type(e).__name__})",
                       "set AVATAR_S3_ENDPOINT to the endpoint as seen from this machine (port-forward if needed)",
                       unreachable=True)
