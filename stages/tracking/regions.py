"""Index sets of MediaPipe Face Mesh's 478 landmarks by face region (from MediaPipe's published
connection lists, Apache-2.0), used to weight the landmark terms and to score keyframes.

Conventions: "left"/"right" are the subject's own (MediaPipe's naming); 468-472 is the right iris
(centre 468), 473-477 the left iris (centre 473)."""

from __future__ import annotations

FACE_OVAL: tuple[int, ...] = (
    10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284,
    288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454
)
LIPS: tuple[int, ...] = (
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267,
    269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415
)
LEFT_EYE: tuple[int, ...] = (
    249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466
)
RIGHT_EYE: tuple[int, ...] = (
    7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246
)
LEFT_EYEBROW: tuple[int, ...] = (
    276, 282, 283, 285, 293, 295, 296, 300, 334, 336
)
RIGHT_EYEBROW: tuple[int, ...] = (
    46, 52, 53, 55, 63, 65, 66, 70, 105, 107
)
NOSE: tuple[int, ...] = (
    1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326, 327, 344,
    440
)
RIGHT_IRIS: tuple[int, ...] = tuple(range(468, 473))
LEFT_IRIS: tuple[int, ...] = tuple(range(473, 478))

# Single points used by the keyframe scores.
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
RIGHT_EYE_OUTER = 33
LEFT_EYE_OUTER = 263
RIGHT_EYE_INNER = 133
LEFT_EYE_INNER = 362
MOUTH_RIGHT = 61
MOUTH_LEFT = 291
LIP_INNER_UPPER = 13
LIP_INNER_LOWER = 14
RIGHT_EYE_UPPER = 159
RIGHT_EYE_LOWER = 145
LEFT_EYE_UPPER = 386
LEFT_EYE_LOWER = 374
N_POINTS = 478
