"""Audio: put a sound track into a finished video (AAC), trimmed to the shorter stream."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from stages.errors import bad_input

log = logging.getLogger("avatar.audio")


def ffmpeg_exe() -> str:
    """The ffmpeg binary that imageio-ffmpeg ships (a project dependency), else ``ffmpeg`` on PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed or no bundled binary
        return "ffmpeg"


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
    """Whether the media file has an audio stream."""
    import av

    with av.open(str(path)) as c:
        return any(s.type == "audio" for s in c.streams)


def mux_audio(video: Path, audio: Path, out: Path) -> None:
    """Write ``out``: ``video``'s video stream (copied, not re-encoded) with ``audio``'s first audio
    stream encoded as AAC. A length mismatch is trimmed to the shorter stream, with a one-line
    warning. The video stream is copied unless it must be cut (then it is re-encoded, H.264 at
    25 fps is assumed; callers that know the audio length beforehand render no more frames than
    it covers, and the copy path applies).

    Raises:
        BadInput: ``audio`` has no audio stream or cannot be read.
    """
    video, audio, out = Path(video), Path(audio), Path(out)
    try:
        a_dur = stream_duration(audio, "audio")
    except Exception as e:  # PyAV cannot open it
        raise bad_input(audio, f"not a readable audio file ({type(e).__name__})", "give a WAV, MP3, AAC or a video "
                        "with sound") from None
    if a_dur is None:
        raise bad_input(audio, "no audio stream", "give a file with sound (WAV, MP3, AAC, or a video with audio)")
    v_dur = stream_duration(video, "video") or 0.0
    dur = min(a_dur, v_dur)
    if abs(a_dur - v_dur) > 1.0 / 25:  # more than one frame at 25 fps
        log.warning("audio %s is %.2f s, video %.2f s: trimmed to the shorter, %.2f s", audio.name, a_dur, v_dur, dur)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part.mp4")
    # A copied stream can only be cut at packet boundaries (a frame or two late with B-frames): a
    # video longer than its audio is re-encoded up to the audio's last frame instead.
    vcodec = (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
               "-frames:v", str(max(1, int(round(a_dur * 25))))] if v_dur > a_dur + 1.0 / 25 else ["-c:v", "copy"])
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(video), "-i", str(audio),
           "-map", "0:v:0", "-map", "1:a:0", *vcodec, "-c:a", "aac", "-b:a", "128k",
           "-t", f"{dur:.6f}", "-movflags", "+faststart", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        msg = (proc.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
        raise bad_input(audio, f"could not mux its audio ({msg})", "give a WAV, MP3 or AAC file")
    tmp.replace(out)
