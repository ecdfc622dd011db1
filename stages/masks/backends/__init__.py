"""Matting and parsing backends of the masks stage.

- :mod:`.mediapipe_default`: offline default; MediaPipe selfie segmentation refined into a soft matte,
  neckhead and mouth from the face landmarks.
- :mod:`.rvm`: a user-supplied RobustVideoMatting ONNX export (recurrent, streams batched along B).
- :mod:`.bisenet`: a user-supplied 19-class BiSeNet face-parsing ONNX model.
"""
