"""``avatar submit-drive`` and ``avatar status`` on drive workflows, against the loopback Argo Server
and the real S3 server."""

from __future__ import annotations


import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:The `json` method is deprecated")

from stages.cli import main
from stages.store.uri import open_store
from workflows.build import build_dict
from workflows.client import workflow_status
from workflows.settings import WorkflowSettings


@pytest.fixture
def uri(s3_env, tmp_path, monkeypatch):
    f = tmp_path / "cluster.yaml"
    f.write_text(f"s3:\n  bucket: {s3_env['bucket']}\n  prefix: p\n")
    monkeypatch.setenv("AVATAR_WORKFLOW_SETTINGS", str(f))
    return f"s3://{s3_env['bucket']}/p"


def _install(argo_server):
    argo_server.templates["avatar-pipeline-drive"] = build_dict(WorkflowSettings(namespace=argo_server.namespace),
                                                                "drive")


def test_submit_drive_motion_uploads_and_picks_the_motion_entry(argo_server, uri, tmp_path, capsys):
    _install(argo_server)
    np.savez(tmp_path / "speech.npz", expr=np.zeros((10, 50), np.float32), fps=np.float64(50))
    (tmp_path / "speech.wav").write_bytes(b"RIFF....WAVE")
    assert main(["submit-drive", "--actor", "roman", "--motion", str(tmp_path / "speech.npz"),
                 "--audio", str(tmp_path / "speech.wav")]) == 0
    out = capsys.readouterr().out
    (name,) = argo_server.workflows
    assert name.startswith("avatar-pipeline-drive-roman-") and out.splitlines()[0] == name
    wf = argo_server.requests[-1][2]["workflow"]
    assert wf["spec"]["entrypoint"] == "drive-motion"
    assert {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]} == \
        {"actor": "roman", "name": "speech", "driver": ""}
    st = open_store(uri)
    from stages.motion.format import load_motion

    local = tmp_path / "got.npz"
    local.write_bytes(st.get_bytes("actors/roman/drive/speech/input/motion.npz"))
    assert len(load_motion(local)) == 5  # resampled to 25 fps before upload
    assert st.get_bytes("actors/roman/drive/speech/input/audio.wav") == b"RIFF....WAVE"
    assert st.get_json("actors/roman/drive/speech/input/settings.json")["driver_neutral"] == "zero"


def test_submit_drive_refuses_a_bad_motion_before_uploading(argo_server, uri, tmp_path, capsys):
    _install(argo_server)
    np.savez(tmp_path / "bad.npz", expr=np.zeros((10, 50)), jaw_pose=np.zeros((10, 2)))
    assert main(["submit-drive", "--actor", "roman", "--motion", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'jaw_pose'" in err[0] and "[10, 2]" in err[0]
    assert argo_server.workflows == {} and open_store(uri).list("actors/") == []


def test_submit_drive_video_uploads_the_driver_entry(argo_server, uri, tmp_path, capsys):
    _install(argo_server)
    video = tmp_path / "Driver Clip.mp4"
    video.write_bytes(b"not a real video; submit only moves bytes")
    assert main(["submit-drive", "--actor", "roman", "--video", str(video)]) == 0
    wf = argo_server.requests[-1][2]["workflow"]
    assert wf["spec"]["entrypoint"] == "drive-video"
    params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    assert params == {"actor": "roman", "name": "driver-clip", "driver": "driver-clip"}
    assert open_store(uri).get_bytes("drivers/driver-clip/input/video.mp4") == video.read_bytes()
    # one pod per shard on the cluster: the driver's short clip is not cut into min_shards shards
    assert open_store(uri).get_json("drivers/driver-clip/config.json")["stages"]["ingest"] == {"min_shards": 1}


def test_status_of_a_drive_workflow_lists_the_drive_stages():
    nodes = {"n1": {"templateName": "ingest", "type": "Pod", "phase": "Succeeded", "displayName": "ingest"},
             "n2": {"templateName": "drive", "type": "Pod", "phase": "Running", "displayName": "drive"}}
    wf = {"metadata": {"name": "avatar-pipeline-drive-roman-0"},
          "spec": {"workflowTemplateRef": {"name": "avatar-pipeline-drive"}},
          "status": {"phase": "Running", "nodes": nodes}}
    got = {s.stage: s.phase for s in workflow_status(wf).stages}
    assert list(got) == ["ingest", "landmarks", "calibrate", "track", "drive"]
    assert got["ingest"] == "Succeeded" and got["drive"] == "Running"
