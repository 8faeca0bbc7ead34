"""A bare `import keras_hessian` (lazy, no TensorFlow) still lets Keras load our quantized layers."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import pytest

from keras_hessian.layers import BinaryDense

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "binary.keras"
    keras.Sequential([keras.Input((4,)), BinaryDense(3, name="binary")]).save(path)
    return str(path)


@pytest.mark.parametrize(
    "imports",
    [
        "import keras_hessian, tensorflow, keras",  # TensorFlow looks keras up before importing it
        "import keras, keras_hessian",  # Keras first: registered at once
        # Keras first imported by one of our own modules while it initialises: registration waits.
        "import keras_hessian.quantizers, keras",
        "import keras_hessian._backend, keras",
    ],
)
def test_load_model_after_a_bare_import(saved, imports):
    script = f"{imports}\nmodel = keras.models.load_model({saved!r})\nprint(type(model.layers[0]).__name__)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "BinaryDense"
