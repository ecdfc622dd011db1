"""Video ingest: streaming decode, ffmpeg-identical 25 fps frame selection, one robust face crop,
MediaPipe face detection and 478-point FaceMesh landmarks.

Modules (one job each):

- :mod:`stages.video.decode`    probe a file, index its frame timestamps, stream decoded frames
- :mod:`stages.video.resample`  which source frame each 25 fps output frame shows (ffmpeg ``fps``)
- :mod:`stages.video.detect`    MediaPipe face detection + a FaceMesh landmark box per sampled frame
- :mod:`stages.video.crop`      one square crop for the whole video from robust statistics
- :mod:`stages.video.facemesh`  MediaPipe FaceMesh (478 points) over a sequence of crops
- :mod:`stages.video.render`    worker jobs: observe sampled frames; cut, resize, JPEG-encode a shard
- :mod:`stages.video.testclip`  synthetic clips whose frames carry their own number (tests, bench)
"""
