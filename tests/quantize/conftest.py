"""The real architectures the graph and folding tests share, each built once per session."""

import keras
import numpy as np
import pytest

from keras_hessian import architectures
from keras_hessian.data import load_digits_rgb


def with_random_batch_norm_statistics(model, seed=0):
    """Moving statistics and affine terms far from their initial 0/1, so folding and copying show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.1, shape))
            layer.moving_mean.assign(rng.normal(0, 0.1, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
    return model


@pytest.fixture(scope="session")
def mobilenet():
    """MobileNetV2 (alpha 0.35, 32x32x3, weights=None) with random BatchNorm statistics; tests must not change it."""
    keras.utils.set_random_seed(0)
    return with_random_batch_norm_statistics(architectures.mobilenet_v2())


@pytest.fixture(scope="session")
def images():
    """Eight real inputs of MobileNetV2: test digits resized to 32x32 RGB."""
    return load_digits_rgb(32)[1][0][:8]
