"""Datasets: embedded real data (sklearn digits, MNIST-1D generated locally) and TFDS."""

from keras_hessian.data.adaptive import adaptive_dataset, batch_size_control
from keras_hessian.data.embedded import load_digits, load_digits_rgb, load_digits_tokens, load_mnist1d
from keras_hessian.data.loading import load_dataset
from keras_hessian.data.tfds import load_tfds

__all__ = [
    "adaptive_dataset",
    "batch_size_control",
    "load_dataset",
    "load_digits",
    "load_digits_rgb",
    "load_digits_tokens",
    "load_mnist1d",
    "load_tfds",
]
