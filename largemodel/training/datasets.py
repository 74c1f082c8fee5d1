"""The names and default sizes of the training datasets, without torch.

``largemodel.training.data`` loads the datasets; the command line (``largemodel.training.cli``) and the
training options list them from here without importing torch.
"""

from __future__ import annotations

__all__ = ["DATASETS", "DEFAULT_SIZE"]

#: the training datasets
DATASETS = ("digits", "faces", "patches")

#: default training side of each dataset, in pixels
DEFAULT_SIZE = {"digits": 8, "faces": 16, "patches": 16}
