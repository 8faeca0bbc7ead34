"""Image classification datasets from TensorFlow Datasets, for users who have the network.

The embedded datasets (`load_digits`, `load_mnist1d`) need no network; this loader reaches the
TFDS catalog (MNIST, Fashion-MNIST, CIFAR-10, ...) and returns the same layout: numpy arrays,
`x` float32 (uint8 images scaled to [0, 1]), `y` int32. It needs the optional dependency
`tensorflow-datasets` (`pip install ".[tfds]"` in a checkout).
"""

from __future__ import annotations

import numpy as np

from keras_hessian._validation import check_int
from keras_hessian.data._types import Split

TFDS_PREFIX = "tfds:"


def _import_tfds():
    try:
        import tensorflow_datasets
    except ImportError as error:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "load_tfds needs tensorflow-datasets: pip install '.[tfds]' in a keras-hessian checkout. Without the "
            "network, use the embedded load_digits() or load_mnist1d()."
        ) from error
    return tensorflow_datasets


def load_tfds(
    name: str,
    *,
    splits: tuple[str, str] = ("train", "test"),
    max_examples: int | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> tuple[Split, Split]:
    """A supervised TFDS dataset as numpy `((x_train, y_train), (x_test, y_test))`.

    Use it to run the Hessian tools, callbacks or export on a catalog dataset with the same
    code as on the embedded ones. The first call downloads and prepares the dataset into
    `data_dir` (TFDS' default `~/tensorflow_datasets`); later calls read the prepared copy.

    Example:
        >>> (x, y), (x_test, y_test) = load_tfds("mnist", max_examples=10_000)
        >>> x.shape, x.dtype
        ((10000, 28, 28, 1), dtype('float32'))

    Args:
        name: a TFDS catalog name with supervised keys (e.g. `"mnist"`, `"fashion_mnist"`,
            `"cifar10"`); a `"tfds:"` prefix is accepted.
        splits: the training and test split names (TFDS slicing such as `"train[:80%]"` works).
        max_examples: keep at most this many examples of each split (`None`: all).
        data_dir: where prepared datasets live (`None`: TFDS' default).
        download: download and prepare when the dataset is not in `data_dir`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: `x` float32 (uint8 images divided by 255),
        `y` int32.
    """
    if not isinstance(name, str) or not name.removeprefix(TFDS_PREFIX):
        raise ValueError(f"name must be a TFDS dataset name such as 'mnist'. Received name={name!r}.")
    name = name.removeprefix(TFDS_PREFIX)
    if not (isinstance(splits, (tuple, list)) and len(splits) == 2 and all(isinstance(s, str) for s in splits)):
        raise ValueError(f"splits must be two split names (train, test). Received splits={splits!r}.")
    max_examples = check_int("max_examples", max_examples, allow_none=True)
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"name={name!r} is not in the TFDS catalog (see tfds.list_builders()).") from None
    if builder.info.supervised_keys is None:
        raise ValueError(
            f"name={name!r} has no supervised (input, label) keys in TFDS; pick a classification dataset."
        )
    if download:  # a no-op when the dataset is already prepared in data_dir
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise OSError(
                f"name={name!r}: TFDS could not download or prepare the dataset ({type(error).__name__}: "
                f"{error}). Without the network, use the embedded load_digits() or load_mnist1d()."
            ) from error

    def split(spec: str) -> Split:
        if max_examples is not None and "[" not in spec:
            spec = f"{spec}[:{max_examples}]"
        dataset = builder.as_dataset(split=spec, as_supervised=True)
        if max_examples is not None:
            dataset = dataset.take(max_examples)
        batches = list(tfds.as_numpy(dataset.batch(4096)))
        if not batches:
            raise ValueError(f"name={name!r}: split {spec!r} holds no examples.")
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        scaled = x.astype("float32") / 255.0 if x.dtype == np.uint8 else x.astype("float32")
        return scaled, y.astype("int32")

    try:
        return split(splits[0]), split(splits[1])
    except AssertionError:  # TFDS' "could not find data in data_dir"
        raise FileNotFoundError(
            f"name={name!r} is not prepared in data_dir={str(builder.data_dir_root)!r} and download=False: "
            "pass download=True (needs the network), or point data_dir at a prepared copy."
        ) from None
