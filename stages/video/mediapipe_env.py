"""The process environment MediaPipe runs in: on the CPU, quietly.

MediaPipe 0.10.21's Linux wheel is built with GPU support: where a GPU driver with EGL is present
(the GPU machine, a GPU node of the cluster) every graph, even a CPU graph such as FaceMesh or
selfie segmentation, opens its own EGL/OpenGL context, which it never uses for our CPU graphs.
With one process per core, sixteen processes creating contexts at once made each graph take about
a second to start on the H100 machine, longer than its first 200 frames. :func:`configure` points
libglvnd's EGL vendor list at nothing before MediaPipe loads, so graph start-up finds no EGL
display and runs on the CPU, as it does on a machine without a GPU; set ``AVATAR_MEDIAPIPE_GL=1``
to leave EGL alone. It also lowers MediaPipe's C++ logging to warnings and errors.

Call it before the first ``import mediapipe`` in the process (modules that use MediaPipe call it
when they are imported, and child processes inherit the environment).
"""

from __future__ import annotations

import os

NO_EGL_VENDORS = "/nonexistent/avatar-pipeline-no-egl.json"
"""The value given to ``__EGL_VENDOR_LIBRARY_FILENAMES``: a vendor file that does not exist."""


def configure() -> None:
    """Set MediaPipe's environment variables for this process and its children (never overriding
    ones the user set)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    if os.environ.get("AVATAR_MEDIAPIPE_GL", "0") != "1":
        os.environ.setdefault("__EGL_VENDOR_LIBRARY_FILENAMES", NO_EGL_VENDORS)
