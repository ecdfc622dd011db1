"""The crop, recorded: where ingest's 512x512 frames came from in the source picture.

``crop.json`` (ingest's folder and the dataset) holds, in displayed (upright) source pixels:

- ``x0``, ``y0``, ``side``: the square's top-left pixel and side; columns ``x0 .. x0+side-1``,
  rows ``y0 .. y0+side-1``. It may reach outside the picture (ingest padded there);
- ``box``: ``[x0, y0, x1, y1]`` with exclusive ends (``x1 = x0 + side``);
- ``bbox``: metrical-tracker's ``[x_min, x_max, y_min, y_max]`` (the same numbers as ``box``,
  reordered; exclusive maxima), also written as ``bbox.pt`` (a torch int64 tensor [4]);
- ``source_width``, ``source_height``: the displayed picture's size; ``rotation``: the display
  rotation ingest undid (counter-clockwise degrees);
- ``out_size``: the side of the frames (512); ``scale``: ``out_size / side`` (frame px per source px).

A point ``(u, v)`` of a frame (pixel centres at integer + 0.5) sits at source ``(x0 + u / scale,
y0 + v / scale)``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from stages.video.crop import CropBox


@dataclass(frozen=True)
class CropRecord:
    """One actor's crop in source pixels (see the module docstring)."""

    x0: int
    y0: int
    side: int
    source_width: int
    source_height: int
    out_size: int = 512
    rotation: int = 0

    @property
    def scale(self) -> float:
        """Frame pixels per source pixel."""
        return self.out_size / self.side

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``, exclusive ends; may reach outside the picture."""
        return self.x0, self.y0, self.x0 + self.side, self.y0 + self.side

    @property
    def bbox(self) -> list[int]:
        """metrical-tracker's ``[x_min, x_max, y_min, y_max]``."""
        x0, y0, x1, y1 = self.box
        return [x0, x1, y0, y1]

    def to_dict(self) -> dict:
        return {"x0": self.x0, "y0": self.y0, "side": self.side, "box": list(self.box), "bbox": self.bbox,
                "source_width": self.source_width, "source_height": self.source_height, "rotation": self.rotation,
                "out_size": self.out_size, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "CropRecord":
        return cls(int(d["x0"]), int(d["y0"]), int(d["side"]), int(d["source_width"]), int(d["source_height"]),
                   int(d.get("out_size", 512)), int(d.get("rotation", 0)))

    @classmethod
    def load(cls, path: str | Path) -> "CropRecord":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def of(cls, crop: CropBox, width: int, height: int, out_size: int, rotation: int = 0) -> "CropRecord":
        return cls(crop.x0, crop.y0, crop.side, width, height, out_size, rotation)


def bbox_pt_bytes(record: CropRecord) -> bytes:
    """metrical-tracker's ``bbox.pt``: ``torch.save`` of an int64 tensor ``[x_min, x_max, y_min, y_max]``."""
    import torch

    buf = io.BytesIO()
    torch.save(torch.tensor(record.bbox, dtype=torch.int64), buf)
    return buf.getvalue()
