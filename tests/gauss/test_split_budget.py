"""The default held-out split and the training budget follow the clip: a phone clip of 250 frames
and a 10,000-frame one both train with the default preset, and the reports say why."""

import math

import numpy as np
import pytest

from stages.dataset.layout import DatasetLayout
from stages.errors import BadInput
from stages.gauss.data import TrackedSequence, choose_split, split_frames
from stages.gauss.trainer import TrainConfig, lr_factor, plan_training, shut_eye_repeats, train, training_budget


@pytest.mark.parametrize("n, n_test", [(8, 4), (30, 5), (250, 25), (400, 40), (750, 75), (4000, 400),
                                       (10000, 500), (20000, 500)])
def test_default_split_is_a_tenth_of_the_clip_between_5_and_500(n, n_test):
    s = choose_split(n)
    assert s.test == list(range(n - n_test, n))
    assert s.train == list(range(min(10000, n - n_test)))
    assert f"the last {n_test} of the {n}" in s.rule and "500" in s.rule
    d = s.describe()
    assert d["frames"] == n_test and d["first"] == n - n_test and d["train_frames"] == len(s.train)


def test_explicit_splits_keep_their_meaning():
    # upstream FlashAvatar (and every avatar trained before the adaptive default): the last 500
    assert choose_split(2000, test_frames=500).test == list(range(1500, 2000))
    assert split_frames(2000) == (list(range(1500)), list(range(1500, 2000)))
    assert choose_split(30, test_fraction=0.1).test == [27, 28, 29]  # the tiny preset's fraction
    with pytest.raises(BadInput, match="leave none for training"):
        choose_split(400, test_frames=500)
    with pytest.raises(BadInput):
        choose_split(1)  # one frame: nothing to hold out and train on


@pytest.mark.parametrize("n, images", [(250, 30_000), (400, 30_000), (750, 40_512), (2500, 135_008),
                                       (10000, 150_000)])
def test_default_budget_follows_the_training_frames(n, images):
    cfg = TrainConfig()
    plan = plan_training(cfg, n)
    assert plan.steps * cfg.batch_size == images
    expect = min(150_000, max(30_000, 60 * len(plan.split.train)))
    assert expect <= plan.steps * cfg.batch_size < expect + cfg.batch_size
    assert f"{len(plan.split.train)} training frames" in plan.budget_rule
    rep = plan.report()
    assert rep["held_out"]["frames"] == len(plan.split.test) and rep["budget"]["steps"] == plan.steps


def test_fixed_steps_override_the_rule():
    steps, why = training_budget(TrainConfig(steps=123, batch_size=4), 5000)
    assert steps == 123 and "train.steps" in why


def test_learning_rate_decays_over_the_last_half():
    cfg = TrainConfig(lr_final_fraction=0.1, lr_decay_fraction=0.5)
    assert lr_factor(cfg, 0, 100) == 1.0 and lr_factor(cfg, 50, 100) == 1.0
    assert lr_factor(cfg, 100, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 75, 100) == pytest.approx(0.55)
    vals = [lr_factor(cfg, s, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert lr_factor(TrainConfig(lr_final_fraction=1.0), 99, 100) == 1.0


def test_a_short_generated_clip_trains_with_the_default_split_and_budget_rule(toy_dataset, tmp_path, one_thread):
    """The 24-frame generated clip with the full preset's split and budget rule (the rule scaled
    down so that it runs in seconds: 1 image a frame, at least 8): 5 frames held out, the steps
    the rule gives, and the result says why it stopped."""
    layout = DatasetLayout(toy_dataset)
    n = len(TrackedSequence.load(layout))
    cfg = TrainConfig(batch_size=2, resolution=24, sh_degree=0, mlp_width=16, mlp_depth=1, pe_freqs=2,
                      uv_resolution=12, checkpoint_every=0, workers=0, log_every=1000,
                      budget_images_per_frame=1.0, budget_min_images=8, budget_max_images=100)
    assert cfg.test_frames is None and cfg.test_fraction is None and cfg.steps is None  # the defaults
    plan = plan_training(cfg, n)
    assert plan.split.test == list(range(n - 5, n))  # 10% of 24 is below the floor of 5
    assert plan.steps == math.ceil(max(8, len(plan.split.train)) / 2) == 10
    from stages.gauss.synthetic import toy_surface

    result = train(cfg, toy_surface(), layout, tmp_path, "cpu")
    assert result.steps == plan.steps and result.images == plan.steps * 2
    assert result.plan == plan
    assert "budget" in result.stop_reason and f"step {plan.steps} of {plan.steps}" in result.stop_reason


def test_frames_without_a_face_at_either_end_are_neither_trained_on_nor_held_out():
    """A clip that starts before the person is in the picture (50 frames of an empty room) and ends
    after they left (10 frames): the split is made over the 90 frames with a face."""
    from stages.gauss.data import face_span

    face = np.ones(150, bool)
    face[:50] = False
    face[140:] = False
    face[70] = False  # one failed frame inside stays (its parameters are interpolated, the face is there)
    span = face_span(face)
    assert span == (50, 140)
    s = choose_split(150, test_fraction=0.1, span=span)
    assert s.test == list(range(131, 140)) and s.train == list(range(50, 131))
    assert "frames with a face (51..140 of 150)" in s.rule
    assert "the first 50 and the last 10 frames show no face" in s.rule
    assert split_frames(150, None, None, span=span)[1] == list(range(131, 140))
    # every frame with a face, or none at all: the split of every frame, as before
    assert choose_split(150, span=face_span(np.ones(150, bool))) == choose_split(150)
    assert face_span(np.zeros(7, bool)) == (0, 7)
    with pytest.raises(BadInput, match="leave none for training"):
        choose_split(150, test_frames=5, span=(10, 14))


def test_shut_eye_repeats_pick_the_training_frames_with_a_shut_eye():
    cond = np.zeros((6, 120), np.float32)
    cond[2, 118] = 0.9  # frame 2: the left eye shut
    cond[4, 119] = 0.6  # frame 4: the right eye shut (a wink)
    cond[5, 118:120] = 0.3  # half shut: not counted
    seq = TrackedSequence(cond=cond, R=np.tile(np.eye(3), (6, 1, 1)), t=np.zeros((6, 3)), K=np.tile(np.eye(3), (6, 1, 1)),
                          shape=np.zeros(300, np.float32), image_size=(64, 64))
    assert shut_eye_repeats(seq, [0, 1, 2, 3, 4, 5], 3) == [1, 1, 3, 1, 3, 1]
    assert shut_eye_repeats(seq, [0, 4], 3) == [1, 3]  # positions in the training split
    assert shut_eye_repeats(seq, [0, 1, 2], 1) is None  # off
    assert shut_eye_repeats(seq, [0, 1, 3], 3) is None  # no shut eye: plain epochs


def test_the_full_preset_draws_shut_eyes_8_times_and_old_actors_stay_finished():
    """shut_eye_repeat's default became 8 (2026-12-07); the CPU presets keep 1, and an actor trained under the
    old default (1) is neither refused nor retrained for it (``FORMER_DEFAULTS``)."""
    from dataclasses import asdict

    from stages.config import PipelineConfig, digest_of
    from stages.config_match import config_holds
    from stages.graph import STAGES

    decl = next(d for d in STAGES if d.name == "train")
    assert PipelineConfig("full").stage_config(decl).shut_eye_repeat == 8
    assert PipelineConfig("tiny").stage_config(decl).shut_eye_repeat == 1
    assert PipelineConfig("demo").stage_config(decl).shut_eye_repeat == 1
    old = asdict(TrainConfig(shut_eye_repeat=1))  # a finished full-preset actor's record before the flip
    assert config_holds(old, digest_of(old), TrainConfig())
    user = asdict(TrainConfig(shut_eye_repeat=4))  # a user's own value is still a change
    assert not config_holds(user, digest_of(user), TrainConfig())
