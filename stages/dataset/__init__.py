"""The FlashAvatar dataset layout and metrical-tracker ``.frame`` files: write, read, verify."""

from stages.dataset.layout import FRAME_DELTA, DatasetLayout
from stages.dataset.frame_file import read_frame, write_frame
from stages.dataset.verify import verify_dataset

__all__ = ["FRAME_DELTA", "DatasetLayout", "read_frame", "write_frame", "verify_dataset"]
