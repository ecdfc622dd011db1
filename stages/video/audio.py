"""Sound: the source's audio on the 25 fps frame timeline, and muxing audio into a finished video.

The timeline. Ingest's output frame ``k`` (0-based; image ``k+1`` on disk, checkpoint ``k``) is
output tick ``q_first + k`` of ffmpeg's ``fps=25`` selection (:mod:`stages.video.resample`), where
ticks count 1/25 s from the container's start time and ``q_first = min(0, q_0)`` (the command
line's constant-frame-rate output starts at the container start when the video starts later,
filling the gap with copies of the first frame). So frame ``k`` covers
``[origin + k/25, origin + (k+1)/25)`` seconds of the streams' common clock, with
``origin = start_time + q_first/25`` (:func:`timeline_origin`).

:func:`extract_audio` decodes the first audio stream (the decoder applies the container's edit
list: priming samples and discarded packets never come out), mixes it to mono and resamples it to
16 kHz with libswresample, and places every decoded frame by its own timestamp on that timeline:
sample ``s`` of ``audio.wav`` is at ``origin + s/16000`` s. Audio before frame 0 is cut, silence
fills where the audio starts late, stops early or has gaps; the file holds exactly
``frames * 640`` samples (640 = 16000 / 25 per frame), so ``audio.wav`` and the per-frame
parameters pair one to one.

:func:`mux_audio` puts an audio file (any format PyAV reads: the WAV above, m4a, mp3, a video's
sound) into an H.264 video as AAC, trimming the longer of the two to the shorter.
"""

from __future__ import annotations

import logging
import wave
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stages.errors import bad_input
from stages.video.container import open_input
from stages.video.decode import FrameIndex, VideoInfo
from stages.video.resample import to_output_ticks

log = logging.getLogger("avatar.audio")

SAMPLE_RATE = 16000
GAP_S = Fraction(1, 100)  # timestamp jumps larger than this are gaps (filled with silence), 10 ms


def timeline_origin(info: VideoInfo, index: FrameIndex, fps: int = 25) -> Fraction:
    """Where output frame 0 begins, seconds on the streams' clock (``pts * time_base``).

    Args:
        info, index: the video as :func:`stages.video.decode.probe` / ``index_frames`` saw it.
        fps: output frame rate.
    Returns:
        ``start_time + min(0, q_0) / fps`` exactly (``q_0``: the first frame's output tick).
    """
    q0 = int(to_output_ticks(np.asarray([int(index.pts[0]) - info.start_pts]), info.time_base, fps)[0])
    return info.start_pts * info.time_base + Fraction(min(0, q0), fps)


@dataclass
class AudioReport:
    """What :func:`extract_audio` found and wrote.

    Attributes:
        codec: the source audio codec; sample_rate_in, channels_in: its rate (Hz) and channels.
        samples: samples written (``frames * samples_per_frame``); sample_rate: 16000.
        first_s, last_s: where the decoded audio starts and ends on the output timeline (s from frame 0).
        leading_silence_s, trailing_silence_s: silence added before and after it.
        gaps: timestamp gaps filled with silence.
    """

    codec: str
    sample_rate_in: int
    channels_in: int
    samples: int
    sample_rate: int
    first_s: float
    last_s: float
    leading_silence_s: float
    trailing_silence_s: float
    gaps: int

    def to_dict(self) -> dict:
        return asdict(self)


def stream_duration(path: str | Path, kind: str) -> float | None:
    """Seconds of the first ``kind`` (``audio`` or ``video``) stream of a media file; None without one.

    Uses the stream's own duration, else the container's, else the last packet's end."""
    import av

    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        if not streams:
            return None
        s = streams[0]
        if s.duration is not None and s.time_base is not None:
            return float(s.duration * s.time_base)
        if c.duration is not None:
            return c.duration / 1_000_000
        end = 0.0
        for p in c.demux(s):
            if p.pts is not None and p.duration is not None:
                end = max(end, float((p.pts + p.duration) * s.time_base))
        return end


def has_audio(path: str | Path) -> bool:
    """Whether ``path`` holds an audio stream."""
    import av

    with open_input(path) as c:
        return len(c.streams.audio) > 0


def decode_mono(path: str | Path, origin: Fraction, rate: int = SAMPLE_RATE):
    """Yield ``(position, samples)``: int16 mono chunks at ``rate`` Hz with their first sample's
    index on the timeline that starts at ``origin`` (seconds on the file's clock). Positions come
    from the decoded frames' timestamps; consecutive frames continue where the previous one ended
    unless their timestamps jump by more than :data:`GAP_S`.

    Returns (via ``StopIteration.value``) ``(codec, rate_in, channels, gaps)``; nothing is yielded
    when the file has no audio stream.
    """
    import av

    with _open_audio(path) as c:
        if not c.streams.audio:
            return None
        stream = c.streams.audio[0]
        cc = stream.codec_context
        meta = (cc.name, int(cc.sample_rate or 0), int(cc.channels or 0))
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        pos: int | None = None      # timeline index of the next resampled sample
        expect: Fraction | None = None  # stream time where the next decoded frame should start
        gaps = 0
        for frame in c.decode(stream):
            if frame.pts is not None and frame.time_base is not None:
                t = frame.pts * Fraction(frame.time_base.numerator, frame.time_base.denominator)
                if pos is None:
                    pos = round((t - origin) * rate)
                elif t - expect > GAP_S:
                    pos += round((t - expect) * rate)
                    gaps += 1
                    expect = t
                if expect is None:
                    expect = t
            if pos is None:
                pos = 0
                expect = Fraction(0)
            expect += Fraction(frame.samples, frame.sample_rate)
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                yield pos, chunk
                pos += chunk.size
        if pos is not None:
            for out in resampler.resample(None):
                chunk = out.to_ndarray().reshape(-1)
                yield pos, chunk
                pos += chunk.size
        return (*meta, gaps)


def extract_audio(path: str | Path, out: str | Path, origin: Fraction, frames: int, fps: int = 25,
                  rate: int = SAMPLE_RATE) -> AudioReport | None:
    """Write the first audio stream of ``path`` as 16-bit mono PCM WAV at ``rate`` Hz, aligned to
    the output frames (frame ``k`` covers samples ``[k*rate/fps, (k+1)*rate/fps)``).

    Args:
        path: the source video.
        out: the WAV file to write (not written when there is no audio).
        origin: where output frame 0 begins on the file's clock (:func:`timeline_origin`).
        frames: output frames; the WAV holds exactly ``frames * rate / fps`` samples.
    Returns:
        what was written, or None when the file has no audio stream or no audio frame decodes.
    """
    per_frame = Fraction(rate, fps)
    total = int(frames * per_frame)
    buf = np.zeros(total, np.int16)
    first = last = None
    gen = decode_mono(path, origin, rate)
    try:
        while True:
            p, chunk = next(gen)
            a, b = max(p, 0), min(p + chunk.size, total)
            if b > a:
                buf[a:b] = chunk[a - p:b - p]
            first = p if first is None else min(first, p)
            last = p + chunk.size if last is None else max(last, p + chunk.size)
    except StopIteration as stop:
        meta = stop.value
    if meta is None or first is None:
        return None
    codec, rate_in, channels, gaps = meta
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(buf.astype("<i2").tobytes())
    return AudioReport(codec=codec, sample_rate_in=rate_in, channels_in=channels, samples=total, sample_rate=rate,
                       first_s=round(first / rate, 4), last_s=round(last / rate, 4),
                       leading_silence_s=round(max(0, first) / rate, 4),
                       trailing_silence_s=round(max(0, total - last) / rate, 4), gaps=gaps)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """int16 [samples, channels] and the sample rate of a PCM WAV file."""
    with wave.open(str(path), "rb") as w:
        n, ch, width, rate = w.getnframes(), w.getnchannels(), w.getsampwidth(), w.getframerate()
        if width != 2:
            raise ValueError(f"{path}: {8 * width}-bit samples, expected 16-bit PCM")
        data = np.frombuffer(w.readframes(n), "<i2").reshape(-1, ch)
    return data, rate


def write_wav(path, samples: np.ndarray, rate: int = SAMPLE_RATE):
    """Write int16 [samples] (mono) or [samples, channels] as a PCM WAV file (a path or a binary
    file object); returns ``path``."""
    s = np.asarray(samples, np.int16)
    s = s.reshape(s.shape[0], -1)
    if isinstance(path, (str, Path)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path) if isinstance(path, Path) else path, "wb") as w:
        w.setnchannels(s.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(s.astype("<i2").tobytes())
    return path


def slice_frames(wav: str | Path, out: str | Path, first: int, count: int, fps: int = 25) -> Path:
    """Write the part of a frame-aligned WAV (as :func:`extract_audio` writes) that belongs to
    output frames ``first .. first+count-1`` (silence where the file has none)."""
    data, rate = read_wav(wav)
    a, n = int(Fraction(rate, fps) * first), int(Fraction(rate, fps) * count)
    part = np.zeros((n, data.shape[1]), np.int16)
    src = data[max(a, 0):max(a, 0) + n]
    part[max(0, -a):max(0, -a) + src.shape[0]] = src[:n - max(0, -a)]
    return write_wav(out, part, rate)


def _video_frames(container, stream) -> int:
    """Frames of a video stream, counted from its packets."""
    return sum(1 for p in container.demux(stream) if p.pts is not None and p.size > 0)


def mux_audio(video: Path, audio: Path, out: Path) -> None:
    """Write ``out``: the video stream of ``video`` (copied, not re-encoded, where it is not
    trimmed) with the first audio stream of ``audio`` encoded as AAC. When the lengths differ the
    longer one is trimmed to the shorter, with a one-line warning (the video is re-encoded with
    libx264 when it is the longer one).

    Args:
        video: an MP4 with one video stream (e.g. a preview or drive video).
        audio: any file with an audio stream (WAV, m4a, mp3, a video with sound).
        out: the MP4 to write (a different path from both inputs).
    """
    import av

    video, audio, out = Path(video), Path(audio), Path(out)
    with av.open(str(video)) as probe_c:
        vs = probe_c.streams.video[0]
        n_frames = _video_frames(probe_c, vs)
        rate = Fraction(vs.average_rate or vs.guessed_rate or 25)
    a_samples, a_rate = _audio_length(audio)
    if a_samples == 0:
        raise bad_input(audio, "the audio stream holds no samples", "give a file with sound in it")
    a_seconds = Fraction(a_samples, a_rate)
    keep_frames, keep_samples = n_frames, a_samples
    v_seconds = Fraction(n_frames) / rate
    if abs(a_seconds - v_seconds) * rate < Fraction(1, 2):  # within half a frame: nothing to report
        keep_samples = min(a_samples, round(v_seconds * a_rate))
    else:
        if a_seconds < v_seconds:
            keep_frames = max(1, round(a_seconds * rate))
        else:
            keep_samples = round(v_seconds * a_rate)
        log.warning("%s: audio %.2f s and video %.2f s (%d frames) differ; trimmed to the shorter",
                    out, float(a_seconds), float(v_seconds), n_frames)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as vin, open_input(audio) as ain, \
            av.open(str(out), "w") as oc:
        vs = vin.streams.video[0]
        if keep_frames < n_frames:
            vo = oc.add_stream("libx264", rate=rate)
            vo.width, vo.height, vo.pix_fmt = vs.codec_context.width, vs.codec_context.height, "yuv420p"
            vo.options = {"crf": "18", "preset": "veryfast"}
        else:
            vo = oc.add_stream_from_template(vs)
        ast = ain.streams.audio[0]
        layout = "mono" if (ast.codec_context.channels or 1) == 1 else "stereo"
        ao = oc.add_stream("aac", rate=a_rate, layout=layout)
        ao.bit_rate = 96000 if layout == "mono" else 128000
        if keep_frames < n_frames:
            done = 0
            for frame in vin.decode(vs):
                if done >= keep_frames:
                    break
                frame.pts = done
                frame.time_base = Fraction(1) / rate
                frame.pict_type = av.video.frame.PictureType.NONE
                for p in vo.encode(frame):
                    oc.mux(p)
                done += 1
            for p in vo.encode():
                oc.mux(p)
        else:
            for p in vin.demux(vs):
                if p.dts is None and p.pts is None:
                    continue
                p.stream = vo
                oc.mux(p)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=a_rate)
        written = 0

        def emit(frames) -> None:
            nonlocal written
            for f in frames:
                take = min(f.samples, keep_samples - written)
                if take <= 0:
                    return
                arr = f.to_ndarray()[:, :take]
                nf = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format="fltp", layout=layout)
                nf.sample_rate = a_rate
                nf.pts = written
                nf.time_base = Fraction(1, a_rate)
                written += take
                for p in ao.encode(nf):
                    oc.mux(p)

        for frame in ain.decode(ast):
            frame.pts = None
            emit(resampler.resample(frame))
            if written >= keep_samples:
                break
        emit(resampler.resample(None))
        for p in ao.encode(None):
            oc.mux(p)


def _open_audio(path: str | Path):
    """The media file ``path`` opened for reading; BadInput (one line) when it is not readable."""
    import av

    try:
        return open_input(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise bad_input(path, f"not a readable audio file ({e.__class__.__name__})",
                        "give a WAV, m4a or mp3 file, or a video with sound") from None


def _audio_length(path: Path) -> tuple[int, int]:
    """(samples, sample rate) of the first audio stream of ``path``, decoded (exact)."""
    with _open_audio(path) as c:
        if not c.streams.audio:
            raise bad_input(path, "no audio stream in it", "give a WAV, m4a or mp3 file, or a video with sound")
        s = c.streams.audio[0]
        n = sum(f.samples for f in c.decode(s))
        return n, int(s.codec_context.sample_rate)
