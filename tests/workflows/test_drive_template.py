"""The drive WorkflowTemplate: built from the graph's ``drive`` pipeline, valid for Argo."""

from __future__ import annotations

import pytest
import yaml

from stages.graph import DRIVE_STEP, PIPELINES, pipeline_stages
from workflows.build import (DRIVE_MOTION, DRIVE_VIDEO, SHARD_SOURCE, build_dict, drive_template_name,
                             drive_workflow_for, dump_yaml)
from workflows.settings import WorkflowSettings


def _templates(doc):
    return {t["name"]: t for t in doc["spec"]["templates"]}


def test_drive_template_validates_against_argo_schema_and_crd(argo_validate):
    doc = build_dict(WorkflowSettings(), "drive")
    assert yaml.safe_load(dump_yaml(doc)) == doc
    assert argo_validate(doc) == []
    assert doc["metadata"]["name"] == drive_template_name(WorkflowSettings()) == "avatar-pipeline-drive"
    for wf in (drive_workflow_for(WorkflowSettings(), "roman", "take1", "driver"),
               drive_workflow_for(WorkflowSettings(), "roman", "speech", None)):
        assert argo_validate(wf, "Workflow") == []


def test_drive_dags_follow_the_drive_pipeline():
    doc = build_dict(WorkflowSettings(), "drive")
    t = _templates(doc)
    video = {x["name"]: x for x in t[DRIVE_VIDEO]["dag"]["tasks"]}
    driver = [s.name for s in pipeline_stages("drive")]
    assert list(video) == driver + [DRIVE_STEP.name] and tuple(driver) == PIPELINES["drive"].stages
    for decl in pipeline_stages("drive"):
        deps = [d.strip() for d in video[decl.name].get("depends", "").split("&&") if d.strip()]
        assert deps == list(decl.needs)
        assert ("withParam" in video[decl.name]) == decl.fan_out
        args = t[decl.name]["container"]["args"]
        assert "drivers/{{workflow.parameters.driver}}" in args  # the driver's own store entry
    assert video[DRIVE_STEP.name]["depends"] == "track"
    assert [x["name"] for x in t[DRIVE_MOTION]["dag"]["tasks"]] == [DRIVE_STEP.name]
    step = t[DRIVE_STEP.name]["container"]
    assert step["args"][:1] == ["drive-step"] and step["image"] == WorkflowSettings().image_of(DRIVE_STEP.image)
    assert "shards" in {p["name"] for p in t[SHARD_SOURCE]["outputs"]["parameters"]}


@pytest.mark.parametrize("driver, entry", [("drv", DRIVE_VIDEO), (None, DRIVE_MOTION)])
def test_drive_workflow_picks_its_entry_point(driver, entry):
    wf = drive_workflow_for(WorkflowSettings(), "roman", "take", driver)
    assert wf["spec"]["entrypoint"] == entry
    assert wf["spec"]["workflowTemplateRef"]["name"] == "avatar-pipeline-drive"
