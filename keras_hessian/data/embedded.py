"""Real datasets that need no network: sklearn digits and MNIST-1D generated locally."""

from __future__ import annotations

import numpy as np

from keras_hessian._validation import check_float, check_int
from keras_hessian.data._types import Split

__all__ = ["load_digits", "load_digits_rgb", "load_digits_tokens", "load_mnist1d"]


def load_digits(test_fraction: float = 0.25, seed: int = 0, image: bool = True) -> tuple[Split, Split]:
    """sklearn's 8x8 handwritten digits (1,797 images), scaled to [0, 1].

    Args:
        test_fraction: share of the examples held out, stratified by class.
        seed: seed of the split.
        image: `True` gives `x` of shape `(n, 8, 8, 1)`, `False` gives `(n, 64)`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, `x` float32, `y` int32 in 0..9.
    """
    test_fraction = check_float("test_fraction", test_fraction, minimum=0.0, maximum=1.0,
                                exclusive_minimum=True, exclusive_maximum=True)
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


def load_digits_rgb(size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> tuple[Split, Split]:
    """The digits of `load_digits` as `size x size` RGB images, for ImageNet-style architectures.

    Each 8x8 image is resized bilinearly and repeated over three channels, so a
    `keras.applications` model built with `weights=None` and `input_shape=(size, size, 3)` takes it.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, `x` float32 of shape `(n, size, size, 3)` in [0, 1].
    """
    size = check_int("size", size, minimum=8)
    import tensorflow as tf

    (x_train, y_train), (x_test, y_test) = load_digits(test_fraction, seed, image=True)

    def resize(x):
        x = tf.image.resize(x, (size, size), method="bilinear").numpy()
        return np.repeat(x, 3, axis=-1).astype("float32")

    return (resize(x_train), y_train), (resize(x_test), y_test)


def load_digits_tokens(test_fraction: float = 0.25, seed: int = 0) -> tuple[Split, Split]:
    """The digits of `load_digits` as sequences of 64 integer tokens (the raw intensities 0..16).

    Real inputs for token models (an `Embedding` over a vocabulary of 17, a sequence length of 64).

    Returns:
        `((x_train, y_train), (x_test, y_test))`, `x` int32 of shape `(n, 64)` in 0..16.
    """
    (x_train, y_train), (x_test, y_test) = load_digits(test_fraction, seed, image=False)

    def tokens(x):
        return np.rint(x * 16.0).astype("int32")

    return (tokens(x_train), y_train), (tokens(x_test), y_test)


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
    num_samples = check_int("num_samples", num_samples, minimum=10)
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
