"""Submit, retry and watch pipeline workflows through the Argo Server REST API (Hera's
:class:`~hera.workflows.service.WorkflowsService`).

Connection (first found wins per field): ``ARGO_SERVER`` (``host:port`` or a URL; ``ARGO_SECURE=false``
means plain HTTP for a bare ``host:port``), ``ARGO_TOKEN`` (with or without ``Bearer``),
``ARGO_NAMESPACE``, ``ARGO_INSECURE_SKIP_VERIFY=true``, ``ARGO_BASE_HREF`` (UI path prefix); else
the current context of a kubeconfig-style file ``$AVATAR_ARGO_CONFIG`` (default
``~/.config/avatar/argo.yaml``)::

    current-context: prod
    contexts:
    - name: prod
      server: https://argo.example.com
      token-file: ~/.config/avatar/prod.token     # or token: ...
      namespace: avatar
      insecure-skip-verify: false

Errors: server unreachable -> :class:`~stages.errors.Transient` (exit 75); token rejected, template
not installed, workflow unknown, request refused -> :class:`~stages.errors.BadInput` (exit 2).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import requests

from stages.errors import BadInput, Transient, bad_input
from stages.graph import topological_order

ARGO_CONFIG_ENV = "AVATAR_ARGO_CONFIG"
DEFAULT_CONFIG = "~/.config/avatar/argo.yaml"
REQUEST_TIMEOUT = (5.0, 60.0)  # connect, read seconds
T = TypeVar("T")


@dataclass
class ArgoConnection:
    """Where the Argo Server is and how to authenticate.

    Attributes:
        server: base URL with scheme, e.g. ``https://argo.example.com:2746``.
        token: bearer token (``Bearer `` prefix optional), or empty for servers in ``server`` auth mode.
        namespace: namespace of the template and workflows.
        verify_ssl: verify the server's TLS certificate.
        base_href: path prefix of the Argo UI (``ARGO_BASE_HREF``), for printed URLs.
    """

    server: str
    token: str = ""
    namespace: str = "avatar"
    verify_ssl: bool = True
    base_href: str = "/"

    def ui_url(self, workflow: str) -> str:
        """Link to the workflow in the Argo UI."""
        base = self.server.rstrip("/") + "/" + self.base_href.strip("/")
        return base.rstrip("/") + f"/workflows/{self.namespace}/{workflow}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _server_url(server: str, secure: bool) -> str:
    server = server.strip()
    if server.startswith(("http://", "https://")):
        return server.rstrip("/") + "/"
    return ("https://" if secure else "http://") + server.rstrip("/") + "/"


def load_connection(env: Mapping[str, str] | None = None, namespace: str | None = None) -> ArgoConnection:
    """The connection from the environment, else the config file's current context.

    ``namespace`` (e.g. from the workflow settings) is used when neither names one.

    Raises:
        BadInput: no server configured, or an unreadable config file.
    """
    env = os.environ if env is None else env
    ctx: dict[str, Any] = {}
    cfg_path = Path(env.get(ARGO_CONFIG_ENV, DEFAULT_CONFIG)).expanduser()
    if cfg_path.is_file():
        import yaml

        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise bad_input(cfg_path, f"not valid YAML ({str(e).splitlines()[0]})", "fix the Argo config file") from None
        current = env.get("AVATAR_ARGO_CONTEXT") or cfg.get("current-context")
        contexts = {c.get("name"): c for c in cfg.get("contexts", []) if isinstance(c, dict)}
        if current is not None and current not in contexts:
            raise bad_input(cfg_path, f"no context {current!r}", f"use one of {', '.join(map(str, contexts)) or '(none)'}")
        ctx = contexts.get(current) or (next(iter(contexts.values())) if len(contexts) == 1 else {})
        if ctx.get("token-file") and not ctx.get("token"):
            tf = Path(str(ctx["token-file"])).expanduser()
            if not tf.is_file():
                raise bad_input(tf, "token file missing", f"create it or fix token-file in {cfg_path}")
            ctx["token"] = tf.read_text().strip()
    server = env.get("ARGO_SERVER") or ctx.get("server")
    if not server:
        raise BadInput("Argo Server: not configured; set ARGO_SERVER=host:port (e.g. after "
                       "`kubectl -n argo port-forward svc/argo-server 2746:2746`, ARGO_SERVER=localhost:2746 "
                       f"ARGO_INSECURE_SKIP_VERIFY=true) or write {cfg_path}")
    secure = not (env.get("ARGO_SECURE", "").strip().lower() in ("false", "0", "no"))
    verify = not (_truthy(env.get("ARGO_INSECURE_SKIP_VERIFY")) or bool(ctx.get("insecure-skip-verify", False)))
    return ArgoConnection(
        server=_server_url(str(server), secure),
        token=(env.get("ARGO_TOKEN") or str(ctx.get("token", ""))).strip(),
        namespace=env.get("ARGO_NAMESPACE") or ctx.get("namespace") or namespace or "avatar",
        verify_ssl=verify,
        base_href=env.get("ARGO_BASE_HREF") or ctx.get("base-href") or "/",
    )


class _TimeoutSession(requests.Session):
    """A session whose requests time out (Hera's service sets none)."""

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        return super().request(method, url, **kwargs)


def service(conn: ArgoConnection):
    """Hera's WorkflowsService for this connection."""
    from hera.workflows.service import WorkflowsService

    return WorkflowsService(host=conn.server, token=conn.token or None, namespace=conn.namespace,
                            verify_ssl=conn.verify_ssl, session=_TimeoutSession())


def call(conn: ArgoConnection, what: str, fn: Callable[[], T], not_found: str | None = None) -> T:
    """Run one Argo Server request, turning failures into our error types.

    Args:
        what: for messages, e.g. ``"submit the workflow"``.
        not_found: the message (problem; fix) for an HTTP 404, or ``None`` to use the server's.
    """
    from hera.exceptions import Forbidden, HeraException, NotFound, Unauthorized

    where = f"Argo Server {conn.server.rstrip('/')}"
    try:
        return fn()
    except requests.exceptions.SSLError as e:
        raise BadInput(f"{where}: TLS handshake failed while trying to {what} ({type(e).__name__}); for a self-signed "
                       "certificate set ARGO_INSECURE_SKIP_VERIFY=true, for a plain-HTTP server ARGO_SECURE=false") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise Transient(f"{where}: unreachable while trying to {what} ({type(e).__name__}); check ARGO_SERVER, that "
                        "argo-server is running (kubectl -n argo get pods) and your port-forward or ingress, then "
                        "retry") from None
    except (Unauthorized, Forbidden) as e:
        raise BadInput(f"{where}: token rejected ({e.status_code}) while trying to {what}; check ARGO_TOKEN (for "
                       f"example `kubectl -n {conn.namespace} create token <service-account>` or `argo auth token`, "
                       f"prefixed 'Bearer ') and that its account may use workflows in namespace "
                       f"{conn.namespace!r}") from None
    except NotFound as e:
        raise BadInput(f"{where}: {not_found or str(e)}") from None
    except HeraException as e:
        code = re.search(r"status code (\d+)", str(e))
        if code is not None and int(code.group(1)) >= 500:
            raise Transient(f"{where}: server error while trying to {what} ({e}); retry later") from None
        raise BadInput(f"{where}: refused to {what}: {e}") from None


def check_template(conn: ArgoConnection, template: str) -> dict[str, Any]:
    """The installed WorkflowTemplate (BadInput telling to install the chart when absent)."""
    svc = service(conn)
    wt = call(conn, f"read WorkflowTemplate {template}",
              lambda: svc.get_workflow_template(template, namespace=conn.namespace),
              not_found=f"WorkflowTemplate {template!r} is not installed in namespace {conn.namespace!r}; install the "
                        f"chart (helm install avatar-pipeline charts/avatar-pipeline -n {conn.namespace}) or apply "
                        "`avatar workflow render | kubectl apply -f -`")
    return to_plain(wt)


def create_workflow(conn: ArgoConnection, workflow: dict[str, Any]) -> dict[str, Any]:
    """Create a Workflow (POST /api/v1/workflows/{namespace}); returns the created object."""
    from hera.workflows.models import Workflow, WorkflowCreateRequest

    svc = service(conn)
    req = WorkflowCreateRequest(namespace=conn.namespace, workflow=Workflow(**workflow))
    return to_plain(call(conn, "submit the workflow", lambda: svc.create_workflow(req, namespace=conn.namespace)))


def retry_workflow(conn: ArgoConnection, name: str) -> dict[str, Any]:
    """Retry a failed workflow's failed nodes (PUT .../{name}/retry); finished stages are skipped
    by their manifests anyway."""
    from hera.workflows.models import WorkflowRetryRequest

    phase = (get_workflow(conn, name).get("status") or {}).get("phase") or "Pending"
    if phase not in ("Failed", "Error"):
        raise BadInput(f"workflow {name!r}: it is {phase}, and only a Failed or Error workflow can be retried; "
                       f"watch it with `avatar status {name}`")
    svc = service(conn)
    req = WorkflowRetryRequest(name=name, namespace=conn.namespace)
    return to_plain(call(conn, f"retry workflow {name}", lambda: svc.retry_workflow(name, req, namespace=conn.namespace),
                         not_found=_no_workflow(conn, name)))


def get_workflow(conn: ArgoConnection, name: str) -> dict[str, Any]:
    """The workflow object (GET .../{name})."""
    svc = service(conn)
    return to_plain(call(conn, f"read workflow {name}", lambda: svc.get_workflow(name, namespace=conn.namespace),
                         not_found=_no_workflow(conn, name)))


def _no_workflow(conn: ArgoConnection, name: str) -> str:
    return (f"no workflow {name!r} in namespace {conn.namespace!r}; check the name (argo list -n {conn.namespace}) "
            "or set ARGO_NAMESPACE")


def to_plain(obj: Any) -> dict[str, Any]:
    """A Hera model as the JSON-shaped dict the server sent (camelCase keys, no nulls)."""
    if isinstance(obj, dict):
        return obj
    import json

    return json.loads(obj.model_dump_json(by_alias=True, exclude_none=True))


# -- status --------------------------------------------------------------------------------------


@dataclass
class StageStatus:
    """One stage of one workflow, from the workflow's nodes.

    Attributes:
        stage: stage name.
        phase: ``Pending`` (not started), ``Running``, ``Succeeded``, ``Failed``, ``Error``,
            ``Skipped`` or ``Omitted``.
        done: finished units (shards for fan-out stages, else 0 or 1).
        total: units (shards, or 1); 0 while not yet known.
        attempts: pods started (retries included).
        progress: Argo's ``N/M`` progress of the stage (frames), or empty.
        message: the last failure message, or empty.
    """

    stage: str
    phase: str = "Pending"
    done: int = 0
    total: int = 0
    attempts: int = 0
    progress: str = ""
    message: str = ""


@dataclass
class WorkflowStatus:
    """Phase and per-stage status of one workflow."""

    name: str
    phase: str
    message: str = ""
    started: str = ""
    finished: str = ""
    progress: str = ""
    stages: list[StageStatus] = field(default_factory=list)


_FAILED = ("Failed", "Error")


def _sum_progress(values: list[str]) -> str:
    done = total = 0
    for v in values:
        try:
            a, b = v.split("/")
            done, total = done + int(a), total + int(b)
        except ValueError:
            continue
    return f"{done}/{total}" if total else ""


def _stages_of(wf: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> list:
    """The stages a workflow runs: the drive pipeline's (driver stages, then the drive step) for a
    workflow of the drive template, else the avatar pipeline's."""
    from stages.graph import DRIVE_STEP, pipeline_stages

    ref = ((wf.get("spec") or {}).get("workflowTemplateRef") or {}).get("name", "")
    if ref.endswith("-drive") or any(n.get("templateName") == DRIVE_STEP.name for n in nodes.values()):
        return [*pipeline_stages("drive"), DRIVE_STEP]
    return topological_order()


def workflow_status(wf: dict[str, Any]) -> WorkflowStatus:
    """Per-stage phase and progress from a workflow's ``status.nodes``.

    A stage's units are its task's invocations: the ``Retry`` nodes of its template (or ``Pod``
    nodes without a retry parent); a fan-out stage has one per shard under a ``TaskGroup`` node.
    """
    status = wf.get("status", {}) or {}
    nodes: dict[str, dict[str, Any]] = status.get("nodes", {}) or {}
    parent_of = {c: nid for nid, n in nodes.items() for c in n.get("children", []) or []}
    out = WorkflowStatus(name=wf.get("metadata", {}).get("name", ""), phase=status.get("phase", "Pending") or "Pending",
                         message=status.get("message", ""), started=status.get("startedAt", ""),
                         finished=status.get("finishedAt", ""), progress=status.get("progress", ""))
    for decl in _stages_of(wf, nodes):
        mine = {nid: n for nid, n in nodes.items() if n.get("templateName") == decl.name
                or (n.get("templateRef") or {}).get("template") == decl.name}
        units = [n for nid, n in mine.items() if n.get("type") == "Retry"
                 or (n.get("type") == "Pod" and nodes.get(parent_of.get(nid, ""), {}).get("type") != "Retry")]
        pods = [n for n in mine.values() if n.get("type") == "Pod"]
        group = next((n for n in nodes.values() if n.get("type") == "TaskGroup" and n.get("displayName") == decl.name),
                     None)
        st = StageStatus(stage=decl.name, attempts=len(pods))
        if group is not None:
            st.total = len(group.get("children", []) or [])
        elif units:
            st.total = len(units)
        st.done = sum(1 for u in units if u.get("phase") in ("Succeeded", "Skipped"))
        phases = [u.get("phase", "Pending") for u in units]
        if group is not None and group.get("phase") in ("Succeeded",) + _FAILED:
            st.phase = group["phase"]
        elif any(p in _FAILED for p in phases) and not any(p in ("Running", "Pending") for p in phases):
            st.phase = next(p for p in phases if p in _FAILED)
        elif any(p in ("Running",) for p in phases) or (units and any(p == "Pending" for p in phases) and st.done):
            st.phase = "Running"
        elif units and all(p in ("Succeeded", "Skipped") for p in phases):
            st.phase = "Succeeded"
        elif units:
            st.phase = "Pending"
        else:
            skipped = next((n for n in nodes.values() if n.get("displayName") == decl.name
                            and n.get("type") in ("Skipped",)), None)
            st.phase = "Omitted" if status.get("phase") in ("Failed", "Error", "Succeeded") and nodes else "Pending"
            if skipped is not None:
                st.phase = "Skipped"
        st.progress = _sum_progress([u.get("progress", "") for u in units])
        failed = [u for u in units + pods if u.get("phase") in _FAILED and u.get("message")]
        if failed:
            st.message = failed[-1]["message"]
        out.stages.append(st)
    return out


def format_status(ws: WorkflowStatus) -> str:
    """A table for the terminal."""
    lines = [f"workflow {ws.name}: {ws.phase}" + (f" ({ws.message})" if ws.message else "")
             + (f", progress {ws.progress}" if ws.progress else "")]
    lines.append(f"{'stage':10s} {'phase':10s} {'units':>7s} {'pods':>5s} {'progress':>12s}  message")
    for s in ws.stages:
        units = f"{s.done}/{s.total}" if s.total else "-"
        lines.append(f"{s.stage:10s} {s.phase:10s} {units:>7s} {s.attempts:5d} {s.progress or '-':>12s}  {s.message}")
    return "\n".join(lines)
