"""Types shared by the dataset loaders."""

from __future__ import annotations

import numpy as np

# One split of a dataset: `(x, y)` arrays.
Split = tuple[np.ndarray, np.ndarray]
