"""The WorkflowTemplate as a Helm template: ``avatar workflow render --for-helm``.

The chart (``charts/avatar-pipeline``) stores this output under ``files/workflowtemplate.yaml``
and renders it with ``tpl``; every cluster-specific field (images, node classes, S3, retries,
semaphore, TTLs, names) becomes a reference into the chart's values, whose layout is
:func:`helm_values` (the settings in camelCase). Argo's own ``{{...}}`` expressions are escaped
as ``{{`{{...}}`}}`` so Helm passes them through.

How: the document is built with the real settings, the cluster-specific values are swapped for
unique plain tokens, the document is dumped as YAML, Argo's braces are escaped, and each token
is replaced by its Helm expression (a quoted scalar, a raw scalar, a ``toYaml`` block, or a block
kept only under a condition). Rendering the result with :func:`helm_values` of *any* settings
gives :func:`workflows.build.build_dict` of those settings (tested through Helm's own library).

Helpers it uses from the chart's ``_helpers.tpl``: ``avatar-pipeline.image`` (``list . IMAGE``),
``avatar-pipeline.serviceAccountName``, ``avatar-pipeline.s3SecretName``,
``avatar-pipeline.storeUri``, ``avatar-pipeline.artifactEndpoint``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from stages.graph import BY_NAME, DRIVE_STEP
from workflows.conventions import ACTOR_REF, FINAL_ARTIFACTS, dump_yaml, label
from workflows.settings import WorkflowSettings

_ARGO_EXPR = re.compile(r"\{\{(?!`)(.*?)\}\}")


@dataclass
class _Sub:
    """How one token becomes Helm text.

    kind: ``quote`` (``{{ EXPR | quote }}``), ``raw`` (the text as is), ``block`` (``key:`` then
    ``toYaml EXPR`` indented under it), ``if`` (the token is a mapping key: keep the key and its
    block only when EXPR holds; ``name`` is the real key), ``with`` (the token is a scalar: emit
    ``name: value`` only when EXPR is non-empty).
    """

    kind: str
    expr: str
    name: str = ""


class _Tokens:
    def __init__(self) -> None:
        self.subs: dict[str, _Sub] = {}

    def __call__(self, kind: str, expr: str, name: str = "") -> str:
        token = f"HELMREF{len(self.subs):04d}X"
        self.subs[token] = _Sub(kind, expr, name)
        return token


def _rename_key(d: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return {(new if k == old else k): v for k, v in d.items()}


def _escape_argo(text: str) -> str:
    return _ARGO_EXPR.sub(lambda m: "{{`{{" + m.group(1) + "}}`}}", text)


DRIVE_COMPONENT = "drive-template"
"""``app.kubernetes.io/component`` of the drive WorkflowTemplate (named ``<name>-drive``)."""


def _is_drive(doc: dict[str, Any]) -> bool:
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == DRIVE_COMPONENT


def _tokenize(doc: dict[str, Any], settings: WorkflowSettings, tok: _Tokens) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    prefix = label(settings, "")
    # the drive template is named after the main one: <name>-drive (workflows.build.drive_template_name)
    name_expr = 'printf "%s-drive" .Values.workflowTemplate.name' if _is_drive(doc) else ".Values.workflowTemplate.name"

    def relabel(d: dict[str, Any]) -> dict[str, Any]:
        return {(tok("raw", "{{ .Values.workflowTemplate.labelPrefix }}/" + k[len(prefix):])
                 if k.startswith(prefix) else k): v for k, v in d.items()}

    md = doc["metadata"]
    md["name"] = tok("quote", name_expr)
    md["namespace"] = tok("quote", ".Release.Namespace")
    spec = doc["spec"]
    spec["serviceAccountName"] = tok("quote", 'include "avatar-pipeline.serviceAccountName" .')
    spec["activeDeadlineSeconds"] = tok("raw", "{{ .Values.workflowTemplate.activeDeadlineSeconds | int64 }}")
    spec["podGC"] = {"deleteDelayDuration": tok("quote", ".Values.workflowTemplate.podGCDelay"),
                     "strategy": tok("quote", ".Values.workflowTemplate.podGC")}
    spec["ttlStrategy"] = {"secondsAfterFailure": tok("raw", "{{ .Values.workflowTemplate.ttlAfterFailure | int64 }}"),
                           "secondsAfterSuccess": tok("raw", "{{ .Values.workflowTemplate.ttlAfterSuccess | int64 }}")}
    wm = spec["workflowMetadata"]
    wm["labels"] = relabel({k: tok("quote", name_expr) for k in wm["labels"]})
    wm["labelsFrom"] = relabel(wm["labelsFrom"])

    store = settings.s3.store_uri
    secret_name = 'include "avatar-pipeline.s3SecretName" .'
    for i, t in enumerate(spec["templates"]):
        decl = BY_NAME.get(t["name"]) or (DRIVE_STEP if t["name"] == DRIVE_STEP.name else None)
        if decl is None:
            continue
        nc = f'(index .Values.nodeClasses "{decl.node_class}")'
        img = f'(index .Values.images "{decl.image}")'
        c = t["container"]
        c["image"] = tok("quote", f'include "avatar-pipeline.image" (list . "{decl.image}")')
        c["imagePullPolicy"] = tok("quote", ".Values.images.pullPolicy")
        c["args"] = [tok("quote", 'include "avatar-pipeline.storeUri" .') if a == store else a for a in c["args"]]
        c["resources"] = tok("block", f'dict "limits" {nc}.limits "requests" {nc}.requests')
        for e in c["env"]:
            if e["name"] == "AVATAR_S3_ENDPOINT":
                e["value"] = tok("quote", ".Values.s3.endpoint")
            elif e["name"] == "AWS_REGION":
                e["value"] = tok("quote", ".Values.s3.region")
            elif e["name"] == "AVATAR_CODE_VERSION":
                e["value"] = tok("quote", f"{img}.tag | default .Values.images.tag | default .Chart.AppVersion")
            elif e["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                ref = e["valueFrom"]["secretKeyRef"]
                ref["name"] = tok("quote", secret_name)
                ref["key"] = tok("quote", ".Values.s3.accessKeyKey" if e["name"] == "AWS_ACCESS_KEY_ID"
                                 else ".Values.s3.secretKeyKey")
        t["nodeSelector"] = tok("block", f"{nc}.nodeSelector")
        t["tolerations"] = tok("block", f"{nc}.tolerations")
        t["timeout"] = tok("quote", f"{nc}.timeout")
        t["pendingTimeout"] = tok("quote", f"{nc}.pendingTimeout")
        for v in t["volumes"]:
            v["emptyDir"]["sizeLimit"] = tok("quote", f"{nc}.shmSize" if v["name"] == "dshm" else f"{nc}.scratchSize")
        r = t["retryStrategy"]
        r["limit"] = tok("raw", "{{ .Values.retry.limit | int64 }}")
        r["backoff"] = {"cap": tok("quote", ".Values.retry.maxBackoff"),
                        "duration": tok("quote", ".Values.retry.backoff"),
                        "factor": tok("raw", "{{ .Values.retry.factor | int64 }}")}
        t["priorityClassName"] = tok("with", f"{nc}.priorityClassName", "priorityClassName")
        t["synchronization"] = {"semaphores": [{"configMapKeyRef": {
            "key": tok("quote", ".Values.semaphore.key"), "name": tok("quote", ".Values.semaphore.configMap")}}]}
        t = _rename_key(t, "synchronization",
                        tok("if", f'has "{decl.node_class}" .Values.semaphore.nodeClasses', "synchronization"))
        t["metadata"]["labels"] = relabel(t["metadata"]["labels"])
        t["metadata"]["annotations"] = relabel(t["metadata"]["annotations"])
        for art in (t.get("outputs") or {}).get("artifacts", []):
            s3 = art["s3"]
            rel = next(r + (".tgz" if archived else "") for n, r, archived in FINAL_ARTIFACTS if n == art["name"])
            s3["endpoint"] = tok("quote", 'include "avatar-pipeline.artifactEndpoint" .')
            s3["insecure"] = tok("raw", '{{ hasPrefix "http://" .Values.s3.endpoint }}')
            s3["bucket"] = tok("quote", ".Values.s3.bucket")
            s3["region"] = tok("quote", ".Values.s3.region")
            s3["key"] = tok("raw", '{{ with trimAll "/" .Values.s3.prefix }}{{ . }}/{{ end }}'
                                   + _escape_argo(f"actors/{ACTOR_REF}/argo/{{{{workflow.name}}}}/{rel}"))
            for sel, key in (("accessKeySecret", ".Values.s3.accessKeyKey"), ("secretKeySecret", ".Values.s3.secretKeyKey")):
                s3[sel] = {"key": tok("quote", key), "name": tok("quote", secret_name)}
        # one key order whatever the settings (optional keys were added above)
        spec["templates"][i] = dict(sorted(t.items(), key=lambda kv: tok.subs[kv[0]].name if kv[0] in tok.subs else kv[0]))
    return doc


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _key_column(line: str) -> int:
    """Column where the mapping key of ``line`` starts (after any ``- `` list markers)."""
    col = _indent(line)
    while line[col:col + 2] == "- ":
        col += 2
    return col


def helm_yaml(doc: dict[str, Any], settings: WorkflowSettings) -> str:
    """``doc`` (built from ``settings``) as the chart's Helm template text."""
    tok = _Tokens()
    text = _escape_argo(dump_yaml(_tokenize(doc, settings, tok)))
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    token_re = re.compile(r"HELMREF\d{4}X")
    while i < len(lines):
        line = lines[i]
        found = token_re.findall(line)
        conditional = [t for t in found if tok.subs[t].kind in ("if", "with", "block")]
        if conditional:
            (t,) = conditional
            sub = tok.subs[t]
            col = _key_column(line)
            if sub.kind == "block":
                out.append(line.replace(" " + t, " {{- toYaml (" + sub.expr + ") | nindent " + str(col + 2) + " }}"))
            elif sub.kind == "with":
                out += ["{{- with " + sub.expr + " }}",
                        line.replace(t, "{{ . | quote }}"), "{{- end }}"]
            else:  # if: the key and every following line indented deeper
                j = i + 1
                while j < len(lines) and lines[j].strip() and _indent(lines[j]) > col:
                    j += 1
                out += ["{{- if " + sub.expr + " }}", line.replace(t, sub.name)] + lines[i + 1:j] + ["{{- end }}"]
                i = j
                continue
            i += 1
            continue
        out.append(line)
        i += 1
    text = "\n".join(out)

    def expand(m: re.Match[str]) -> str:
        sub = tok.subs[m.group(0)]
        return "{{ " + sub.expr + " | quote }}" if sub.kind == "quote" else sub.expr

    what, flag = ("drive WorkflowTemplate", " --pipeline drive") if _is_drive(doc) else ("WorkflowTemplate", "")
    header = (f"# The avatar-pipeline {what}, written by `avatar workflow render --for-helm{flag}` (make chart).\n"
              "# Do not edit: change workflows/ and regenerate. Rendered by the chart with tpl.\n")
    return header + token_re.sub(expand, text)


def helm_values(settings: WorkflowSettings) -> dict[str, Any]:
    """The chart values (the subset this template reads) that reproduce ``settings``."""
    s3 = settings.s3
    return {
        "workflowTemplate": {"name": settings.name, "activeDeadlineSeconds": settings.active_deadline_seconds,
                             "ttlAfterSuccess": settings.ttl_after_success, "ttlAfterFailure": settings.ttl_after_failure,
                             "podGC": settings.pod_gc, "podGCDelay": settings.pod_gc_delay,
                             "labelPrefix": settings.label_prefix},
        "images": {"registry": "", "tag": "", "pullPolicy": settings.image_pull_policy,
                   **{k: {"registry": v.registry, "repository": v.repository, "tag": v.tag}
                      for k, v in settings.images.items()}},
        "nodeClasses": {k: {"nodeSelector": dict(v.node_selector), "tolerations": [dict(t) for t in v.tolerations],
                            "requests": dict(v.requests), "limits": dict(v.limits), "shmSize": v.shm_size,
                            "scratchSize": v.scratch_size, "timeout": v.timeout, "pendingTimeout": v.pending_timeout,
                            "priorityClassName": v.priority_class}
                        for k, v in settings.node_classes.items()},
        "s3": {"endpoint": s3.endpoint, "bucket": s3.bucket, "prefix": s3.prefix, "region": s3.region,
               "existingSecret": s3.credentials_secret, "credentials": {"secretName": s3.credentials_secret},
               "accessKeyKey": s3.access_key_key, "secretKeyKey": s3.secret_key_key},
        "retry": {"limit": settings.retry.limit, "backoff": settings.retry.backoff, "factor": settings.retry.factor,
                  "maxBackoff": settings.retry.max_backoff},
        "semaphore": {"configMap": settings.semaphore.config_map, "key": settings.semaphore.key,
                      "nodeClasses": list(settings.semaphore.node_classes)},
        "serviceAccount": {"name": settings.service_account},
    }
