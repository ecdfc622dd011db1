"""Check everything before writing anything: an actor's video, options and assets are validated, and
the resulting config is checked against the stages that already finished, before one byte goes to
the store. Then :func:`apply_setup` writes (video, assets, config: in that order).

A refused command therefore leaves the store as it was; a video that fails validation is never kept
as the actor's video (so the same ``--actor`` with the right file works next time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stages.assets import CheckedAsset, add_asset, check_asset
from stages.config import CONFIG_FILE, PRESETS, PipelineConfig
from stages.config_match import config_changes, describe_changes
from stages.errors import BadInput
from stages.graph import BY_NAME
from stages.names import check_entry
from stages.runner.context import actor_key
from stages.runner.manifest import MANIFEST, Manifest
from stages.store.base import Store, sha256_file

VIDEO_KEY = ("input", "video.mp4")

# The command-line option that sets each asset kind, for messages that name what the user typed.
ASSET_OPTIONS = {"flame": "--flame", "mediapipe-embedding": "--mediapipe-embedding", "flame-masks": "--flame-masks",
                 "flame-texture": "--flame-texture", "matting": "--matting", "parsing": "--parsing"}


@dataclass
class ActorSetup:
    """What a command will write for an actor, all of it already validated.

    Attributes:
        actor: the actor name (valid).
        pipeline: the config the actor will have.
        video: the user's video path when it must be uploaded (``None``: already stored or not given).
        video_sha: its sha256.
        assets: files to store, checked.
        user_paths: ``{store copy: the path the user typed}``, to name the user's file in later errors.
    """

    actor: str
    pipeline: PipelineConfig
    video: Path | None = None
    video_sha: str | None = None
    assets: list[CheckedAsset] = field(default_factory=list)
    user_paths: dict[str, str] = field(default_factory=dict)


def check_video(video: Path) -> str:
    """Probe ``video`` (opens it and decodes its first frame; BadInput naming ``video`` if that
    fails); return its sha256."""
    from stages.video.decode import probe

    probe(video)
    return sha256_file(video)


def plan_setup(store: Store, actor: str, video: Path | None = None, preset: str | None = None,
               assets: dict[str, Path | None] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
               require_video: bool = False, check: Callable[[PipelineConfig, Path | None], None] | None = None,
               ) -> ActorSetup:
    """Validate a command's inputs for ``actor`` against the store, writing nothing.

    ``check(pipeline, flame_path)`` is the command's own rule on the resulting config, run before
    the video-presence check (``require_video``: the actor must have or be given a video).

    Raises:
        BadInput: bad actor name, missing or unreadable video, a different video for an actor that
            has one, unknown preset, an asset that fails its format check, or a config that differs
            from the one the actor's finished stages ran with (finished outputs are never overwritten).
    """
    check_entry(actor)
    if preset is not None and preset not in PRESETS:
        raise BadInput(f"--preset {preset}: unknown preset; use one of {', '.join(PRESETS)}")
    setup = ActorSetup(actor, PipelineConfig())
    key = actor_key(actor, *VIDEO_KEY)
    if video is not None:
        video = Path(video)
        if video.is_dir():
            raise BadInput(f"{video}: a folder, not a video file; give the path of the talking-head video "
                           f"itself (e.g. {video / 'clip.mp4'})")
        if not video.is_file():
            raise BadInput(f"{video}: no such file; give the path to the talking-head video")
        sha = check_video(video)
        if store.exists(key):
            if store.sha256(key) != sha:
                raise BadInput(f"{video}: actor {actor!r} already has a different video, and uploads are never "
                               f"overwritten; use another --actor name for {video}")
        else:
            setup.video, setup.video_sha = video, sha
        setup.user_paths[f"{store.uri}/{key}"] = str(video)

    try:
        old = store.get_json(actor_key(actor, CONFIG_FILE))
    except KeyError:
        old = None
    pipeline = PipelineConfig.from_dict(old) if old is not None else PipelineConfig()
    if preset is not None:
        pipeline.preset = preset
    for kind_name, path in (assets or {}).items():
        if path is None:
            continue
        checked = check_asset(kind_name, path, store)
        setup.assets.append(checked)
        pipeline.assets[kind_name] = checked.sha256
        setup.user_paths[f"{store.uri}/assets/{kind_name}/{checked.sha256}/{Path(path).name}"] = str(path)
    for stage, values in (overrides or {}).items():
        pipeline.stages.setdefault(stage, {}).update(values)
    for decl in BY_NAME.values():  # unknown settings: refused now, not at that stage
        if decl.name in pipeline.stages:
            pipeline.stage_config(decl)
    check_finished_stages(store, actor, pipeline, PipelineConfig.from_dict(old) if old else None, setup.user_paths)
    setup.pipeline = pipeline
    if check is not None:  # the command's own rule on the config (e.g. FLAME needs its embedding)
        check(pipeline, (assets or {}).get("flame"))
    if require_video and video is None and not store.exists(key):
        raise BadInput(f"--video: actor {actor!r} has no video yet in {store.uri}; pass --video PATH "
                       "(the talking-head video)")
    return setup


def check_finished_stages(store: Store, actor: str, pipeline: PipelineConfig, old: PipelineConfig | None,
                          user_paths: dict[str, str] | None = None) -> None:
    """BadInput if a stage that finished for ``actor`` ran with another config or other assets than
    ``pipeline`` gives it: the command would be refused at that stage after changing things."""
    finished: dict[str, Manifest] = {}
    for decl in BY_NAME.values():
        try:
            finished[decl.name] = Manifest.from_dict(store.get_json(actor_key(actor, decl.name, MANIFEST)))
        except KeyError:
            continue
    if not finished:
        return
    clash = []
    settings: list[str] = []  # "train: steps 200 -> 300" for stages whose settings differ
    for name, m in finished.items():
        decl = BY_NAME[name]
        module = decl.load()
        config = pipeline.stage_config(decl)
        if not m.config_holds(config):  # fields added since, at their defaults, hold (stages.config_match)
            clash.append(name)
            settings.append(f"{name}: {describe_changes(config_changes(m.config, m.config_digest, config))}")
            continue
        want = {f"asset:{k}": v for k, v in pipeline.assets.items() if k in getattr(module, "ASSETS", ())}
        have = {k: v for k, v in m.inputs.items() if k.startswith("asset:")}
        if want != have:
            clash.append(name)
    if not clash:
        return
    what = _what_changed(pipeline, old, user_paths or {})
    if what == "config" and settings:  # nothing the user typed: config.json or the code's defaults changed
        raise BadInput(f"{store.uri}/{actor_key(actor, CONFIG_FILE)}: actor {actor!r} already finished "
                       f"{', '.join(clash)} with other settings than this command, code and config give "
                       f"({'; '.join(settings)}), and finished outputs are never overwritten; run it as before "
                       f"(without an option that changes them; a changed default: set the old values in that "
                       f"file's \"stages\") to resume, or use a new --actor name")
    raise BadInput(f"{what}: actor {actor!r} already finished {', '.join(clash)} with "
                   f"{_describe(old)}, and finished outputs are never overwritten; run it as before "
                   f"(without that option) to resume, or use a new --actor name")


def _describe(old: PipelineConfig | None) -> str:
    if old is None:
        return "another config"
    kinds = ", ".join(sorted(old.assets)) or "no assets"
    return f"preset {old.preset} and {kinds}"


def _what_changed(new: PipelineConfig, old: PipelineConfig | None, user_paths: dict[str, str]) -> str:
    """The option the user typed that changes the config (for the message)."""
    if old is None:
        return f"--preset {new.preset}"
    if new.preset != old.preset:
        return f"--preset {new.preset}"
    for kind_name, sha in new.assets.items():
        if old.assets.get(kind_name) != sha:
            path = next((p for k, p in user_paths.items() if f"/assets/{kind_name}/{sha}/" in k), sha[:12])
            return f"{ASSET_OPTIONS.get(kind_name, kind_name)} {path}"
    return "config"


def apply_setup(store: Store, setup: ActorSetup) -> PipelineConfig:
    """Write what :func:`plan_setup` checked: the video, the assets, then the config. Returns the
    actor's pipeline config."""
    if setup.video is not None:
        key = actor_key(setup.actor, *VIDEO_KEY)
        if store.exists(key):  # another process stored one meanwhile
            if store.sha256(key) != setup.video_sha:
                raise BadInput(f"{setup.video}: actor {setup.actor!r} already has a different video, and uploads "
                               f"are never overwritten; use another --actor name for {setup.video}")
        elif store.put_file(key, setup.video) != setup.video_sha:
            store.delete(key)
            raise BadInput(f"{setup.video}: the file changed while it was being uploaded; upload it again")
    for checked in setup.assets:
        add_asset(store, checked.kind, checked.path, checked)
    config_key = actor_key(setup.actor, CONFIG_FILE)
    try:
        current = store.get_json(config_key)
    except KeyError:
        current = None
    if current != setup.pipeline.to_dict():
        store.put_json(config_key, setup.pipeline.to_dict())
    return setup.pipeline


def rename_user_paths(err: BadInput, user_paths: dict[str, str]) -> BadInput:
    """``err`` with store copies (``.../actors/a/input/video.mp4``) replaced by the paths the user
    typed, so every message names the user's file."""
    text = str(err)
    for copy, typed in sorted(user_paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(copy, typed)
    if text == str(err):
        return err
    return BadInput(text)

