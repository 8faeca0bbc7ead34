"""`load_dataset`: any dataset of the package by name (embedded or TFDS)."""

from __future__ import annotations

from keras_hessian.data._types import Split
from keras_hessian.data.embedded import load_digits, load_mnist1d
from keras_hessian.data.tfds import load_tfds

__all__ = ["load_dataset"]


def load_dataset(name: str, **kwargs) -> tuple[Split, Split]:
    """Load a dataset by name: `"digits"`, `"mnist1d"` (embedded) or `"tfds:NAME"` (TensorFlow
    Datasets, see `keras_hessian.data.tfds.load_tfds`; needs the network once)."""
    if isinstance(name, str) and name.startswith("tfds:"):
        return load_tfds(name, **kwargs)
    loaders = {"digits": load_digits, "mnist1d": load_mnist1d}
    if name not in loaders:
        raise ValueError(f"name must be one of {sorted(loaders)} or 'tfds:NAME'. Received name={name!r}.")
    return loaders[name](**kwargs)
