"""Real datasets that need no network: sklearn digits and MNIST-1D generated locally."""

from __future__ import annotations

import numpy as np

Split = tuple[np.ndarray, np.ndarray]


def load_digits(test_fraction: float = 0.25, seed: int = 0, image: bool = True) -> tuple[Split, Split]:
    """sklearn's 8x8 handwritten digits (1,797 images), scaled to [0, 1].

    Args:
        test_fraction: share of the examples held out, stratified by class.
        seed: seed of the split.
        image: `True` gives `x` of shape `(n, 8, 8, 1)`, `False` gives `(n, 64)`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, `x` float32, `y` int32 in 0..9.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1). Received test_fraction={test_fraction}.")
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype("float32")
    y = bunch.target.astype("int32")
    if image:
        x = x.reshape(-1, 8, 8, 1)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return (x_train, y_train), (x_test, y_test)


def load_mnist1d(num_samples: int = 5000, seed: int = 42, channels: bool = True) -> tuple[Split, Split]:
    """MNIST-1D (Greydanus, 2020) generated locally with `mnist1d.data.make_dataset`.

    The generator's own split is 80% train / 20% test. Its default (`num_samples=5000`,
    `seed=42`) is the published benchmark set.

    Args:
        num_samples: total examples, train and test together.
        seed: the generator's seed.
        channels: `True` gives `x` of shape `(n, 40, 1)` for Conv1D, `False` gives `(n, 40)`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, `x` float32, `y` int32 in 0..9.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be at least 10. Received num_samples={num_samples}.")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    data = make_dataset(args)

    def prepare(x: np.ndarray) -> np.ndarray:
        x = x.astype("float32")
        return x[..., None] if channels else x

    return (prepare(data["x"]), data["y"].astype("int32")), (
        prepare(data["x_test"]),
        data["y_test"].astype("int32"),
    )


def load_dataset(name: str, **kwargs) -> tuple[Split, Split]:
    """Load a dataset by name: `"digits"`, `"mnist1d"` (embedded) or `"tfds:NAME"` (TensorFlow
    Datasets, see `keras_hessian.data.tfds.load_tfds`; needs the network once)."""
    if isinstance(name, str) and name.startswith("tfds:"):
        from keras_hessian.data.tfds import load_tfds

        return load_tfds(name, **kwargs)
    loaders = {"digits": load_digits, "mnist1d": load_mnist1d}
    if name not in loaders:
        raise ValueError(f"name must be one of {sorted(loaders)} or 'tfds:NAME'. Received name={name!r}.")
    return loaders[name](**kwargs)
