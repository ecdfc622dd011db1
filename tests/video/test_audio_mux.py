"""mux_audio: AAC track in a copied video stream, trimmed to the shorter of the two."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from stages.errors import BadInput
from stages.video.audio import has_audio, mux_audio, stream_duration


def _video(path, frames: int, size: int = 32):
    from stages.gauss.preview import PreviewWriter

    with PreviewWriter(path, size, size, 25) as w:
        for k in range(frames):
            w.write(np.full((size, size, 3), 8 * k % 256, np.uint8))
    return path


def _wav(path, seconds: float, sr: int = 16000):
    t = np.arange(int(round(seconds * sr))) / sr
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr)
        w.writeframes((0.2 * np.sin(2 * np.pi * 1000 * t) * 32767).astype(np.int16).tobytes())
    return path


@pytest.mark.parametrize("frames, seconds", [(25, 1.0), (25, 3.0), (50, 1.2)])
def test_mux_gives_aac_of_the_shorter_length(tmp_path, frames, seconds, caplog):
    import av

    v, a = _video(tmp_path / "v.mp4", frames), _wav(tmp_path / "a.wav", seconds)
    mux_audio(v, a, tmp_path / "out.mp4")
    assert has_audio(tmp_path / "out.mp4") and not has_audio(v)
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        kept = sum(1 for _ in c.decode(video=0))
    assert abs(kept - min(frames, seconds * 25)) <= 1, kept
    a_dur = stream_duration(tmp_path / "out.mp4", "audio")
    want = min(frames / 25, seconds)
    assert abs(a_dur - want) <= 1 / 25, (a_dur, want)
    warned = [r for r in caplog.records if "trimmed" in r.getMessage()]
    assert len(warned) == (0 if abs(seconds - frames / 25) < 1 / 25 else 1)


def test_audio_without_sound_is_bad_input(tmp_path):
    v = _video(tmp_path / "v.mp4", 5)
    with pytest.raises(BadInput, match="no audio stream"):
        mux_audio(v, v, tmp_path / "out.mp4")
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.raises(BadInput, match="not a readable audio file"):
        mux_audio(v, tmp_path / "junk.wav", tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
