"""``avatar submit|retry|status`` against a loopback Argo Server (real HTTP, real Hera client) and
the real S3 server."""

from __future__ import annotations

import json
import socket

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:The `json` method is deprecated")

from stages.cli import main
from stages.store.uri import open_store
from workflows.build import build_dict
from workflows.client import load_connection, workflow_status
from workflows.settings import WorkflowSettings


@pytest.fixture
def video(tmp_path):
    """A small real video: submit probes the video before uploading it."""
    import av
    import numpy as np

    p = tmp_path / "talking.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return p


@pytest.fixture
def uri(s3_env, tmp_path, monkeypatch):
    """Workflow settings whose store is a fresh bucket of the real S3 server; returns its URI."""
    f = tmp_path / "cluster.yaml"
    f.write_text(f"s3:\n  bucket: {s3_env['bucket']}\n  prefix: p\n")
    monkeypatch.setenv("AVATAR_WORKFLOW_SETTINGS", str(f))
    return f"s3://{s3_env['bucket']}/p"


def _install(argo_server):
    argo_server.templates["avatar-pipeline"] = build_dict(WorkflowSettings(namespace=argo_server.namespace))


def test_submit_uploads_and_creates_a_workflow_from_the_template(argo_server, video, uri, capsys):
    _install(argo_server)
    code = main(["submit", "--actor", "roman", "--video", str(video), "--preset", "tiny"])
    out = capsys.readouterr().out
    assert code == 0, out
    (name,) = argo_server.workflows
    assert name.startswith("avatar-pipeline-roman-") and out.splitlines()[0] == name
    assert f"{argo_server.url}/workflows/avatar-test/{name}" in out
    methods = [(m, p.split("?")[0]) for m, p, _ in argo_server.requests]
    assert methods == [("GET", "/api/v1/workflow-templates/avatar-test/avatar-pipeline"),
                       ("POST", "/api/v1/workflows/avatar-test")]
    wf = argo_server.requests[-1][2]["workflow"]
    assert wf["spec"]["arguments"]["parameters"] == [{"name": "actor", "value": "roman"}]
    assert wf["metadata"]["labels"]["avatar-pipeline/actor"] == "roman"
    st = open_store(uri)  # where the pods read: the settings' bucket and prefix
    assert st.get_bytes("actors/roman/input/video.mp4") == video.read_bytes()
    assert st.get_json("actors/roman/config.json")["preset"] == "tiny"
    # one pod per shard on the cluster: a new actor's short clip is not cut into min_shards shards
    assert st.get_json("actors/roman/config.json")["stages"]["ingest"] == {"min_shards": 1}


def test_submit_never_overwrites_another_video(argo_server, video, uri, capsys):
    _install(argo_server)
    open_store(uri).put_bytes("actors/roman/input/video.mp4", b"the first video")
    assert main(["submit", "--actor", "roman", "--video", str(video)]) == 2
    assert "never" in capsys.readouterr().err and not argo_server.workflows
    assert open_store(uri).get_bytes("actors/roman/input/video.mp4") == b"the first video"


def test_submit_errors_name_the_fix(argo_server, video, uri, tmp_path, capsys, monkeypatch):
    # template not installed: exit 2, install the chart
    assert main(["submit", "--actor", "roman", "--video", str(video)]) == 2
    err = capsys.readouterr().err
    assert "not installed" in err and "helm install" in err and err.count("\n") == 1
    _install(argo_server)
    # video missing: exit 2 before any request
    n = len(argo_server.requests)
    assert main(["submit", "--actor", "roman", "--video", str(tmp_path / "nope.mp4")]) == 2
    assert "nope.mp4" in capsys.readouterr().err and len(argo_server.requests) == n
    assert main(["submit", "--actor", "roman"]) == 2
    assert "--video" in capsys.readouterr().err
    # bad actor name
    assert main(["submit", "--actor", "Roman Polanski", "--video", str(video)]) == 2
    capsys.readouterr()
    # token rejected: exit 2, check ARGO_TOKEN
    monkeypatch.setenv("ARGO_TOKEN", "wrong")
    assert main(["submit", "--actor", "roman", "--video", str(video)]) == 2
    err = capsys.readouterr().err
    assert "token rejected (401)" in err and "ARGO_TOKEN" in err
    # server errors are transient: exit 75
    monkeypatch.setenv("ARGO_TOKEN", "s3cr3t-token")
    argo_server.fail_with = 503
    assert main(["submit", "--actor", "roman", "--video", str(video)]) == 75
    capsys.readouterr()


def test_unreachable_server_is_transient(video, uri, capsys, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    monkeypatch.setenv("ARGO_SERVER", f"http://127.0.0.1:{port}")
    assert main(["submit", "--actor", "roman", "--video", str(video)]) == 75
    err = capsys.readouterr().err
    assert "unreachable" in err and "ARGO_SERVER" in err


def _node(nid, display, template, typ, phase, children=(), **kw):
    return nid, {"id": nid, "name": f"wf.{display}", "displayName": display, "templateName": template, "type": typ,
                 "phase": phase, "children": list(children), **kw}


def _arranged_status():
    """Nodes shaped like Argo's (DAG -> TaskGroup -> Retry -> Pod) mid-run, with one failure. As in
    Argo, a finished task's outbound pod lists the dependent tasks' nodes among its children."""
    nodes = dict([
        _node("wf", "wf", "pipeline", "DAG", "Running", ["i"]),
        _node("i", "ingest", "ingest", "Retry", "Succeeded", ["i0", "i1"]),
        _node("i0", "ingest(0)", "ingest", "Pod", "Failed", message="exit code 75: S3 unreachable"),
        _node("i1", "ingest(1)", "ingest", "Pod", "Succeeded", ["lg"], progress="250/250"),
        _node("lg", "landmarks", "landmarks", "TaskGroup", "Succeeded", ["l0", "l1"]),
        _node("l0", "landmarks(0:0)", "landmarks", "Retry", "Succeeded", ["l0p"], progress="100/100"),
        _node("l0p", "landmarks(0:0)(0)", "landmarks", "Pod", "Succeeded", ["mg", "c"]),
        _node("l1", "landmarks(1:1)", "landmarks", "Retry", "Succeeded", ["l1p"], progress="150/150"),
        _node("l1p", "landmarks(1:1)(0)", "landmarks", "Pod", "Succeeded", ["mg", "c"]),
        _node("mg", "masks", "masks", "TaskGroup", "Running", ["m0", "m1"]),
        _node("m0", "masks(0:0)", "masks", "Retry", "Succeeded", ["m0p"], progress="100/100"),
        _node("m0p", "masks(0:0)(0)", "masks", "Pod", "Succeeded"),
        _node("m1", "masks(1:1)", "masks", "Retry", "Running", ["m1p"], progress="60/150"),
        _node("m1p", "masks(1:1)(0)", "masks", "Pod", "Running"),
        _node("c", "calibrate", "calibrate", "Retry", "Failed", ["c0"]),
        _node("c0", "calibrate(0)", "calibrate", "Pod", "Failed",
              message="Error (exit code 2): no face found in keyframes"),
    ])
    return {"metadata": {"name": "avatar-pipeline-roman-00000", "namespace": "avatar-test"},
            "spec": {"workflowTemplateRef": {"name": "avatar-pipeline"}},
            "status": {"phase": "Running", "nodes": nodes}}


def test_status_per_stage(argo_server, capsys):
    argo_server.workflows["avatar-pipeline-roman-00000"] = _arranged_status()
    assert main(["status", "avatar-pipeline-roman-00000", "--json"]) == 0
    got = {s["stage"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert (got["ingest"]["phase"], got["ingest"]["attempts"], got["ingest"]["done"]) == ("Succeeded", 2, 1)
    assert (got["landmarks"]["phase"], got["landmarks"]["done"], got["landmarks"]["total"]) == ("Succeeded", 2, 2)
    assert got["landmarks"]["progress"] == "250/250"
    assert (got["masks"]["phase"], got["masks"]["done"], got["masks"]["total"]) == ("Running", 1, 2)
    assert got["masks"]["progress"] == "160/250"
    assert got["calibrate"]["phase"] == "Failed" and "no face" in got["calibrate"]["message"]
    assert got["track"]["phase"] == "Pending" and got["track"]["total"] == 0
    assert main(["status", "avatar-pipeline-roman-00000"]) == 0
    table = capsys.readouterr().out
    assert "masks" in table and "1/2" in table and "160/250" in table
    assert main(["status", "no-such-workflow"]) == 2
    assert "no workflow 'no-such-workflow'" in capsys.readouterr().err


def test_retry_puts_to_the_retry_path(argo_server, capsys):
    wf = _arranged_status()
    argo_server.workflows["avatar-pipeline-roman-00000"] = wf
    assert main(["retry", "avatar-pipeline-roman-00000"]) == 2  # still Running: nothing to retry
    assert "only a Failed or Error workflow" in capsys.readouterr().err
    wf["status"]["phase"] = "Failed"
    assert main(["retry", "avatar-pipeline-roman-00000"]) == 0
    assert argo_server.requests[-1][:2] == ("PUT", "/api/v1/workflows/avatar-test/avatar-pipeline-roman-00000/retry")
    assert "Running" in capsys.readouterr().out
    assert main(["retry", "nope"]) == 2
    capsys.readouterr()


def test_connection_from_kubeconfig_style_file(tmp_path, monkeypatch):
    token = tmp_path / "tok"
    token.write_text("abc\n")
    cfg = tmp_path / "argo.yaml"
    cfg.write_text(f"current-context: b\ncontexts:\n- name: a\n  server: a:1\n- name: b\n  server: argo.example:2746\n"
                   f"  token-file: {token}\n  namespace: nsb\n  insecure-skip-verify: true\n")
    conn = load_connection(env={"AVATAR_ARGO_CONFIG": str(cfg)})
    assert (conn.server, conn.token, conn.namespace, conn.verify_ssl) == ("https://argo.example:2746/", "abc", "nsb", False)
    conn = load_connection(env={"AVATAR_ARGO_CONFIG": str(cfg), "ARGO_SERVER": "h:1", "ARGO_SECURE": "false"})
    assert conn.server == "http://h:1/" and conn.ui_url("w") == "http://h:1/workflows/nsb/w"


def test_status_of_a_finished_workflow_marks_unreached_stages():
    wf = _arranged_status()
    wf["status"]["phase"] = "Failed"
    ws = workflow_status(wf)
    assert {s.stage: s.phase for s in ws.stages}["render"] == "Omitted"


def test_submit_takes_the_flame_route_and_checks_every_asset_first(argo_server, video, uri, tmp_path, capsys):
    """--flame with --mediapipe-embedding [--flame-masks] [--flame-texture], as `avatar run` takes
    them; a missing embedding or any bad file refuses the command before any upload or request."""
    from stages.face.standin import build_standin

    _install(argo_server)
    files = build_standin(tmp_path / "standin")
    st = open_store(uri)

    def nothing_written():
        return not st.list("actors/") and not st.list("assets/") and not argo_server.workflows

    # FLAME alone: refused before anything is uploaded or submitted
    assert main(["submit", "--actor", "roman", "--video", str(video), "--flame", str(files["flame"])]) == 2
    err = capsys.readouterr().err
    assert "--mediapipe-embedding" in err and err.count("\n") == 1
    assert nothing_written() and argo_server.requests == []
    # a malformed optional file: refused, naming it, nothing uploaded
    bad = tmp_path / "FLAME_texture.npz"
    bad.write_bytes(b"not an npz")
    assert main(["submit", "--actor", "roman", "--video", str(video), "--flame", str(files["flame"]),
                 "--mediapipe-embedding", str(files["mediapipe-embedding"]), "--flame-texture", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert nothing_written() and argo_server.requests == []
    # the whole route: every asset stored by sha256 and chosen for the actor, then submitted
    assert main(["submit", "--actor", "roman", "--video", str(video), "--flame", str(files["flame"]),
                 "--mediapipe-embedding", str(files["mediapipe-embedding"]),
                 "--flame-masks", str(files["flame-masks"])]) == 0, capsys.readouterr()
    chosen = st.get_json("actors/roman/config.json")["assets"]
    assert set(chosen) == {"flame", "mediapipe-embedding", "flame-masks"}
    assert len(argo_server.workflows) == 1
