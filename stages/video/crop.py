"""One square crop for the whole video, from robust statistics over sampled frames.

FlashAvatar ignores the principal point, so the face must sit in the middle of every 512x512
image; a crop that moves per frame would also move the camera. Like metrical-tracker we use one
static box, but chosen from many frames instead of the first one:

- centre: the median of the landmark-box centres (robust to a few misdetections);
- side: ``scale`` (2.5) times a high percentile (90th) of the landmark-box size, and at least
  enough to keep 95% of the sampled landmark boxes inside with a 5% margin;
- outside the picture the crop is padded (edge pixels repeated, or black).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from stages.video.detect import Box, FaceObservation


@dataclass(frozen=True)
class CropBox:
    """A square in display pixels: columns ``x0 .. x0+side-1``, rows ``y0 .. y0+side-1``
    (may extend past the picture; padded there)."""

    x0: int
    y0: int
    side: int

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.side / 2, self.y0 + self.side / 2

    def contains(self, box: Box) -> bool:
        """Whether a box (x0, y0, x1, y1) lies wholly inside the crop."""
        return (box[0] >= self.x0 and box[1] >= self.y0 and box[2] <= self.x0 + self.side
                and box[3] <= self.y0 + self.side)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def choose_crop(observations: Sequence[FaceObservation], *, scale: float = 2.5, size_percentile: float = 90.0,
                cover_percentile: float = 95.0, margin: float = 1.05) -> CropBox:
    """The crop for the whole video from the frames where a face was found.

    Args:
        observations: per sampled frame; those without a face are ignored.
        scale: crop side / landmark-box size.
        size_percentile: which percentile of the landmark-box size (longer side) ``scale``
            multiplies; high so that the face fits when it comes closer.
        cover_percentile: the crop also reaches past this percentile of the boxes' farthest edge
            from the centre, times ``margin``.
    Raises:
        ValueError: no observation has a face (the caller turns that into bad input).
    """
    boxes = np.array([o.box for o in observations if o.box is not None], dtype=np.float64)
    if boxes.size == 0:
        raise ValueError("no face in any observation")
    cx = float(np.median((boxes[:, 0] + boxes[:, 2]) / 2))
    cy = float(np.median((boxes[:, 1] + boxes[:, 3]) / 2))
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    side = scale * float(np.percentile(sizes, size_percentile))
    reach = np.max(np.abs(boxes - np.array([cx, cy, cx, cy])), axis=1)
    side = max(side, 2 * margin * float(np.percentile(reach, cover_percentile)))
    side_i = max(2, int(round(side)))
    return CropBox(int(round(cx - side_i / 2)), int(round(cy - side_i / 2)), side_i)


def out_of_crop_fraction(observations: Sequence[FaceObservation], crop: CropBox) -> float:
    """Fraction of the frames with a face whose landmark box is not wholly inside ``crop``."""
    found = [o for o in observations if o.box is not None]
    if not found:
        return 0.0
    return sum(not crop.contains(o.box) for o in found) / len(found)


def cut_reference(image: np.ndarray, crop: CropBox, out: int = 512, pad: str = "edge") -> np.ndarray:
    """Reference: pad the whole picture, slice the square, resize (simple and slow).

    Args:
        image: [H,W,C] uint8.
        pad: ``edge`` (repeat border pixels) or ``black``.
    Returns:
        [out,out,C] uint8.
    """
    import cv2

    h, w = image.shape[:2]
    left, top = max(0, -crop.x0), max(0, -crop.y0)
    right, bottom = max(0, crop.x0 + crop.side - w), max(0, crop.y0 + crop.side - h)
    mode = "edge" if pad == "edge" else "constant"
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode=mode)
    sq = padded[crop.y0 + top:crop.y0 + top + crop.side, crop.x0 + left:crop.x0 + left + crop.side]
    return _resize(np.ascontiguousarray(sq), out, cv2)


def cut(image: np.ndarray, crop: CropBox, out: int = 512, pad: str = "edge") -> np.ndarray:
    """Fast path of :func:`cut_reference` (same pixels): slice only the part of the picture
    inside the crop, pad that with ``cv2.copyMakeBorder``, resize.

    Args:
        image: [H,W,C] uint8 (may be a non-contiguous view, e.g. a rotated frame).
    Returns:
        [out,out,C] uint8.
    """
    import cv2

    h, w = image.shape[:2]
    ax0, ay0 = min(max(crop.x0, 0), w - 1), min(max(crop.y0, 0), h - 1)
    ax1, ay1 = max(min(crop.x0 + crop.side, w), ax0 + 1), max(min(crop.y0 + crop.side, h), ay0 + 1)
    roi = np.ascontiguousarray(image[ay0:ay1, ax0:ax1])
    top, left = ay0 - crop.y0, ax0 - crop.x0
    bottom, right = crop.y0 + crop.side - ay1, crop.x0 + crop.side - ax1
    if top or left or bottom or right:
        if pad == "edge":
            roi = cv2.copyMakeBorder(roi, top, bottom, left, right, cv2.BORDER_REPLICATE)
        else:
            roi = cv2.copyMakeBorder(roi, max(top, 0), max(bottom, 0), max(left, 0), max(right, 0),
                                     cv2.BORDER_CONSTANT, value=0)
    return _resize(roi, out, cv2)


def _resize(square: np.ndarray, out: int, cv2) -> np.ndarray:
    """Resize a square to ``out`` pixels: bicubic up; down, box-average by the whole factor
    (OpenCV's fast integer ``INTER_AREA``) and then bilinear for the remaining factor (< 2)."""
    side = square.shape[0]
    if side == out:
        return square
    if side < out:
        return cv2.resize(square, (out, out), interpolation=cv2.INTER_CUBIC)
    k = side // out
    if k >= 2:
        m = side // k
        square = cv2.resize(square[:m * k, :m * k], (m, m), interpolation=cv2.INTER_AREA)
        if m == out:
            return square
    return cv2.resize(square, (out, out), interpolation=cv2.INTER_LINEAR)
