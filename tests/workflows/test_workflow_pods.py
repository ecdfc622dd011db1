"""The pod contract: what Argo would run, run here.

``avatar submit`` (against the loopback Argo Server) uploads a small synthetic clip to a real S3
server and creates a Workflow; then the test plays the Argo controller and kubelet: it walks the
submitted template's DAG in dependency order, expands ``withParam`` fan-outs from the ingest pod's
output parameter, and runs every template's container ``command + args`` as a subprocess with the
environment the pod would get (literal values, the S3 Secret's keys for ``secretKeyRef``), with
the pod's mounts (``/scratch``, ``/tmp/argo-outputs``) mapped to temporary folders. The run ends
with a trained tiny avatar in the store and the files the render pod hands to Argo as artifacts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages.cli import main
from stages.config import PipelineConfig
from stages.runner.context import actor_key
from stages.store.uri import open_store
from workflows.build import OUTPUTS_DIR, SCRATCH, build_dict
from workflows.settings import settings_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The `json` method is deprecated")]

FRAMES = 60
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video

    path = tmp_path_factory.mktemp("clip") / "synthetic.mp4"
    model = load_face_model(None)
    spec = SynthSpec(n_frames=FRAMES, seed=3, size=512)
    render_video(model, generate_params(model, spec), path)
    return path


def _subst(text: str, params: dict[str, str]) -> str:
    for k, v in params.items():
        text = text.replace("{{" + k + "}}", v)
    return text


class Kubelet:
    """Runs one template as a pod would: its command, args and env; mounts mapped to folders."""

    def __init__(self, templates: dict[str, dict], secrets: dict[str, dict[str, str]], root: Path):
        self.templates = templates
        self.secrets = secrets
        self.root = root
        self.pods = 0

    def run(self, name: str, params: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
        t = self.templates[name]
        self.pods += 1
        pod = self.root / f"pod-{self.pods:03d}-{name}"
        mounts = {OUTPUTS_DIR: str(pod / "outputs"), SCRATCH: str(pod / "scratch")}
        for d in mounts.values():
            Path(d).mkdir(parents=True)

        def local(text: str) -> str:
            text = _subst(text, params)
            for src, dst in mounts.items():
                text = text.replace(src, dst)
            assert "{{" not in text, f"unresolved Argo expression in {name}: {text}"
            return text

        c = t["container"]
        env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(pod), "LANG": "C.UTF-8",
               "AVATAR_S3_CONFIG": "/nonexistent/s3.json", "OMP_NUM_THREADS": "2",
               "ARGO_PROGRESS_FILE": str(pod / "progress"),
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # the pods run the checkout under test
        for e in c["env"]:
            if "valueFrom" in e:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secrets[ref["name"]][ref["key"]]
            else:
                env[e["name"]] = local(e["value"])
        cmd = [local(a) for a in c["command"] + c["args"]]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        outputs = {"parameters": {}, "artifacts": {}}
        if proc.returncode == 0:
            for p in (t.get("outputs") or {}).get("parameters", []):
                outputs["parameters"][p["name"]] = Path(local(p["valueFrom"]["path"])).read_text()
            for a in (t.get("outputs") or {}).get("artifacts", []):
                outputs["artifacts"][a["name"]] = (Path(local(a["path"])), _subst(a["s3"]["key"], params))
        outputs["pod"] = pod
        return proc, outputs


def _dag_order(tasks: list[dict]) -> list[dict]:
    deps = {t["name"]: [d.strip() for d in t.get("depends", "").split("&&") if d.strip()] for t in tasks}
    done: list[str] = []
    while len(done) < len(tasks):
        ready = [t for t in tasks if t["name"] not in done and all(d in done for d in deps[t["name"]])]
        assert ready, f"cycle in {deps}"
        done.append(ready[0]["name"])
    return [next(t for t in tasks if t["name"] == n) for n in done]


def test_pods_run_the_whole_pipeline(argo_server, s3_env, clip, tmp_path, monkeypatch, capsys):
    bucket = s3_env["bucket"]
    settings = settings_from_dict({"namespace": argo_server.namespace,
                                   "s3": {"endpoint": s3_env["AVATAR_S3_ENDPOINT"], "bucket": bucket,
                                          "prefix": "pods", "region": s3_env["AWS_REGION"]}})
    argo_server.templates[settings.name] = build_dict(settings)
    sfile = tmp_path / "settings.json"
    sfile.write_text(json.dumps({"s3": {"endpoint": settings.s3.endpoint, "bucket": bucket, "prefix": "pods",
                                        "region": settings.s3.region}}))
    # two shards of 30 frames, so the fan-outs really fan out (submit keeps stored overrides)
    open_store(settings.s3.store_uri).put_json(actor_key("synth", "config.json"),
                                               PipelineConfig(stages={"ingest": {"shard_size": 30}}).to_dict())
    assert main(["submit", "--actor", "synth", "--video", str(clip), "--preset", "tiny", "--settings", str(sfile)]) == 0
    (wf_name,) = argo_server.workflows
    wf = argo_server.workflows[wf_name]
    template = argo_server.templates[wf["spec"]["workflowTemplateRef"]["name"]]
    params = {f"workflow.parameters.{p['name']}": p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    params["workflow.name"] = wf_name
    secrets = {settings.s3.credentials_secret: {settings.s3.access_key_key: s3_env["AWS_ACCESS_KEY_ID"],
                                                settings.s3.secret_key_key: s3_env["AWS_SECRET_ACCESS_KEY"]}}
    templates = {t["name"]: t for t in template["spec"]["templates"]}
    kubelet = Kubelet(templates, secrets, tmp_path / "pods")
    task_outputs: dict[str, dict] = {}
    timings = {}
    dag = templates[template["spec"]["entrypoint"]]["dag"]["tasks"]
    for task in _dag_order(dag):
        t0 = time.monotonic()
        if "withParam" in task:
            items = json.loads(_subst(task["withParam"], {
                f"tasks.{n}.outputs.parameters.{k}": v for n, o in task_outputs.items()
                for k, v in o["parameters"].items()}))
            assert items == [0, 1], items
        else:
            items = [None]
        for item in items:
            local = dict(params)
            for a in (task.get("arguments") or {}).get("parameters", []):
                local[f"inputs.parameters.{a['name']}"] = a["value"].replace("{{item}}", str(item))
            proc, out = kubelet.run(task["template"], local)
            assert proc.returncode == 0, f"{task['name']} {item}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
            if item is not None:
                assert re.fullmatch(r"\d+/\d+\n?", (out["pod"] / "progress").read_text())
            task_outputs.setdefault(task["name"], out)
        timings[task["name"]] = round(time.monotonic() - t0, 1)
    print("pod seconds per task:", timings)

    store = open_store(settings.s3.store_uri)
    assert store.exists(actor_key("synth", "render", "manifest.json"))
    arts = task_outputs["render"]["artifacts"]
    preview, key = arts["preview"]
    assert preview.read_bytes()[4:8] == b"ftyp" and key == f"pods/actors/synth/argo/{wf_name}/preview.mp4"
    assert (arts["avatar"][0] / "avatar.pt").is_file()
    assert json.loads((arts["report"][0] / "report.json").read_text())

    # a retried pod of a finished stage skips its work; a pod for an actor without a video exits 2
    proc, _ = kubelet.run("track", {**params, "inputs.parameters.shard": "0"})
    assert proc.returncode == 0 and "skipped" in proc.stdout
    proc, _ = kubelet.run("ingest", {**params, "workflow.parameters.actor": "nobody"})
    assert proc.returncode == 2 and "video" in proc.stderr

    # The drive template's pods: the same clip as a driver of the trained avatar (drive-video), then
    # a motion file with sound (drive-motion).
    argo_server.templates[f"{settings.name}-drive"] = build_dict(settings, "drive")
    _run_drive_workflow(argo_server, settings, secrets, tmp_path / "drive-pods",
                        ["submit-drive", "--actor", "synth", "--video", str(clip), "--name", "self",
                         "--resolution", "128", "--settings", str(sfile)])
    drive = actor_key("synth", "drive", "self")
    for rel in ("drive.mp4", "motion.npz", "side_by_side.mp4", "manifest.json"):
        assert store.exists(f"{drive}/{rel}"), rel
    assert store.exists("drivers/self/track/manifest.json")
    import numpy as np

    np.savez(tmp_path / "speech.npz", expr=np.zeros((12, 50), np.float32), jaw_pose=np.zeros((12, 3), np.float32))
    import wave

    with wave.open(str(tmp_path / "speech.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    _run_drive_workflow(argo_server, settings, secrets, tmp_path / "drive-pods-2",
                        ["submit-drive", "--actor", "synth", "--motion", str(tmp_path / "speech.npz"),
                         "--audio", str(tmp_path / "speech.wav"), "--resolution", "128", "--settings", str(sfile)])
    assert store.exists(actor_key("synth", "drive", "speech", "manifest.json"))


def _run_drive_workflow(argo_server, settings, secrets, root: Path, submit: list[str]) -> None:
    before = set(argo_server.workflows)
    assert main(submit) == 0
    (wf_name,) = set(argo_server.workflows) - before
    wf = argo_server.workflows[wf_name]
    template = argo_server.templates[wf["spec"]["workflowTemplateRef"]["name"]]
    params = {f"workflow.parameters.{p['name']}": p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    params["workflow.name"] = wf_name
    templates = {t["name"]: t for t in template["spec"]["templates"]}
    kubelet = Kubelet(templates, secrets, root)
    outputs: dict[str, dict] = {}
    for task in _dag_order(templates[wf["spec"]["entrypoint"]]["dag"]["tasks"]):
        if "withParam" in task:
            items = json.loads(_subst(task["withParam"], {
                f"tasks.{n}.outputs.parameters.{k}": v for n, o in outputs.items() for k, v in o["parameters"].items()}))
        else:
            items = [None]
        for item in items:
            local = dict(params)
            for a in (task.get("arguments") or {}).get("parameters", []):
                local[f"inputs.parameters.{a['name']}"] = a["value"].replace("{{item}}", str(item))
            proc, out = kubelet.run(task["template"], local)
            assert proc.returncode == 0, f"{task['name']} {item}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
            outputs.setdefault(task["name"], out)
