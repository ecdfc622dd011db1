"""``avatar workflow render``, ``avatar submit``, ``avatar retry``, ``avatar status``, ``avatar doctor``:
the pipeline on a Kubernetes cluster that runs Argo Workflows (see docs/cluster.md).

Also the two helpers pods run around ``avatar stage`` (``avatar workflow shard-list`` and
``avatar workflow collect``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from stages.cli import app
from stages.config import PRESETS

workflow_app = typer.Typer(help="The Argo WorkflowTemplate: render it, and the helpers its pods run.",
                           no_args_is_help=True)
app.add_typer(workflow_app, name="workflow")

_SETTINGS_HELP = "Workflow settings file (YAML/JSON; default $AVATAR_WORKFLOW_SETTINGS, else built-in defaults)."


def _settings(path: Path | None, registry: str | None = None, tag: str | None = None):
    from workflows.settings import load_settings, with_image

    return with_image(load_settings(path), registry, tag)


@workflow_app.command("render", help="Write the WorkflowTemplate YAML (to stdout or --out). With --for-helm, "
                                     "cluster-specific fields become Helm value references: the chart's copy.")
def render(out: Path = typer.Option(None, "--out", help="Write to this file instead of stdout."),
           for_helm: bool = typer.Option(False, "--for-helm", help="Helm template form (charts/avatar-pipeline/files/)."),
           settings: Path = typer.Option(None, "--settings", help=_SETTINGS_HELP),
           registry: str = typer.Option(None, "--registry", help="Image registry for all images."),
           tag: str = typer.Option(None, "--tag", help="Image tag for all images."),
           pipeline: str = typer.Option("avatar", "--pipeline", help="avatar (video to avatar) or drive (the drive "
                                                                      "template).")) -> None:
    from stages.errors import BadInput
    from workflows.build import render_yaml

    if pipeline not in ("avatar", "drive"):
        raise BadInput(f"--pipeline {pipeline}: use avatar or drive")
    text = render_yaml(_settings(settings, registry, tag), for_helm=for_helm, pipeline=pipeline)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        typer.echo(f"wrote {out}", err=True)


@workflow_app.command("shard-list", help="(Run by the ingest pod.) Write the JSON list of shard indices for Argo's "
                                         "withParam.")
def shard_list(actor: str = typer.Option(..., "--actor"), store: str = typer.Option(..., "--store"),
               out: Path = typer.Option(..., "--out")) -> None:
    from stages.store.uri import open_store
    from workflows.outputs import write_shard_list

    indices = write_shard_list(open_store(store), actor, out)
    typer.echo(f"{len(indices)} shards: {json.dumps(indices)}")


@workflow_app.command("collect", help="(Run by the last pod.) Copy the final avatar, preview and report to a folder "
                                      "for Argo's output artifacts.")
def collect(actor: str = typer.Option(..., "--actor"), store: str = typer.Option(..., "--store"),
            out: Path = typer.Option(..., "--out")) -> None:
    from stages.store.uri import open_store
    from workflows.outputs import collect_outputs

    got = collect_outputs(open_store(store), actor, out)
    typer.echo(", ".join(f"{k}: {len(v)} files" for k, v in got.items()))


def _cluster_defaults(st, actor: str) -> dict | None:  # noqa: ANN001 - Store
    """:data:`workflows.build.CLUSTER_DEFAULTS` for an actor without a ``config.json`` yet; None for one
    that has one (its settings, and its finished stages, stay as they are)."""
    from stages.runner.context import actor_key
    from workflows.build import CLUSTER_DEFAULTS

    return None if st.exists(actor_key(actor, "config.json")) else CLUSTER_DEFAULTS


@app.command("submit", help="Run the pipeline on the cluster: upload the video to the settings' S3 store (reached "
                            "from here through AVATAR_S3_ENDPOINT and the AWS_* keys), store the actor's config, "
                            "submit a Workflow from the installed template, print its name and Argo UI link.")
def submit(actor: str = typer.Option(..., "--actor", help="Actor name (lower-case letters, digits, . _ -)."),
           video: Path = typer.Option(None, "--video", help="The talking-head video (not needed if already uploaded)."),
           flame: Path = typer.Option(None, "--flame", help="FLAME 2020 generic_model.pkl to use. Needs "
                                                            "--mediapipe-embedding."),
           mediapipe_embedding: Path = typer.Option(None, "--mediapipe-embedding",
                                                    help="mediapipe_landmark_embedding.npz (metrical-tracker's file)."),
           flame_masks: Path = typer.Option(None, "--flame-masks", help="FLAME_masks.pkl (optional)."),
           flame_texture: Path = typer.Option(None, "--flame-texture", help="FLAME_texture.npz (optional)."),
           matting: Path = typer.Option(None, "--matting", help="RobustVideoMatting .pth or ONNX export (optional)."),
           parsing: Path = typer.Option(None, "--parsing", help="BiSeNet face-parsing ONNX model (optional)."),
           preset: str = typer.Option(None, "--preset", help=f"One of {', '.join(PRESETS)}."),
           identity: Path = typer.Option(None, "--identity", help="MICA's identity.npy (300 FLAME shape "
                                                                  "coefficients): calibrate's shape starts there."),
           mica: Path = typer.Option(None, "--mica", help="MICA's mica.tar: calibrate computes the identity with it."),
           settings: Path = typer.Option(None, "--settings", help=_SETTINGS_HELP)) -> None:
    from stages.errors import bad_input
    from stages.runner.context import actor_key
    from stages.store.uri import open_store
    from workflows.build import check_actor, workflow_for
    from workflows.client import check_template, create_workflow, load_connection

    from stages.cli.run_cmd import check_model_options
    from stages.runner.pipeline import check_face_assets
    from stages.runner.setup import apply_setup, plan_setup

    check_actor(actor)
    if video is not None and not video.is_file():
        raise bad_input(video, "no such file", "give the path to the talking-head video")
    assets = {"mediapipe-embedding": mediapipe_embedding, "flame-masks": flame_masks, "flame-texture": flame_texture,
              "matting": matting, "parsing": parsing}
    ws = _settings(settings)
    st = open_store(ws.s3.store_uri)  # the pods' store; the endpoint from here is AVATAR_S3_ENDPOINT
    check_model_options(st, actor, flame, identity, mica)
    # every file checked, FLAME without its embedding refused, before any request, upload or submit
    setup = plan_setup(st, actor, video, preset, {"flame": flame, **assets, "identity": identity, "mica": mica},
                       overrides=_cluster_defaults(st, actor), check=check_face_assets)
    conn = load_connection(namespace=ws.namespace)
    ws = dataclasses.replace(ws, namespace=conn.namespace)
    check_template(conn, ws.name)
    if video is None and not st.exists(actor_key(actor, "input", "video.mp4")):
        raise bad_input(f"{st.uri}/{actor_key(actor, 'input', 'video.mp4')}", f"actor {actor!r} has no video yet",
                        "pass --video PATH")
    apply_setup(st, setup)
    created = create_workflow(conn, workflow_for(ws, actor))
    name = created.get("metadata", {}).get("name", "")
    typer.echo(name)
    typer.echo(f"Argo UI: {conn.ui_url(name)}")
    typer.echo(f"watch: avatar status {name}    retry failed pods: avatar retry {name}")


@app.command("retry", help="Retry a failed workflow: failed pods run again; finished stages are skipped.")
def retry(name: str = typer.Argument(..., help="Workflow name (printed by avatar submit)."),
          settings: Path = typer.Option(None, "--settings", help=_SETTINGS_HELP)) -> None:
    from workflows.client import load_connection, retry_workflow

    conn = load_connection(namespace=_settings(settings).namespace)
    wf = retry_workflow(conn, name)
    typer.echo(f"{name}: {wf.get('status', {}).get('phase', 'Running') or 'Running'}")
    typer.echo(f"Argo UI: {conn.ui_url(name)}")


@app.command("status", help="Per-stage phase, shards and progress of a workflow.")
def status(name: str = typer.Argument(..., help="Workflow name."),
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
           settings: Path = typer.Option(None, "--settings", help=_SETTINGS_HELP)) -> None:
    from workflows.client import format_status, get_workflow, load_connection, workflow_status

    conn = load_connection(namespace=_settings(settings).namespace)
    ws = workflow_status(get_workflow(conn, name))
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(ws), indent=2))
    else:
        typer.echo(format_status(ws))
        typer.echo(f"Argo UI: {conn.ui_url(name)}")


@app.command("doctor", help="Check the cluster is ready: namespace, Argo, the template, nodes per node class with "
                            "their GPUs, the S3 bucket. Each problem comes with its fix; exits non-zero on a "
                            "blocking one.")
def doctor(settings: Path = typer.Option(None, "--settings", help=_SETTINGS_HELP),
           kubeconfig: Path = typer.Option(None, "--kubeconfig", help="Kubeconfig file (default $KUBECONFIG or "
                                                                        "~/.kube/config)."),
           context: str = typer.Option(None, "--context", help="Kubeconfig context.")) -> None:
    from workflows.doctor import exit_code, format_findings, run_doctor

    findings = run_doctor(_settings(settings), kubeconfig=kubeconfig, context=context)
    typer.echo(format_findings(findings))
    code = exit_code(findings)
    if code:
        raise typer.Exit(code)
