"""The model check every export entry point runs first (a built Keras 3 model)."""

from __future__ import annotations

from typing import Any

import keras

from keras_hessian._validation import check_type


def check_model(model: Any) -> None:
    """Raise unless `model` is a built `keras.Model`.

    Raises:
        TypeError: `model` is not a Keras 3 model.
        ValueError: it is not built.
    """
    check_type("model", model, keras.Model, "a Keras 3 keras.Model")
    if not model.built:
        raise ValueError(
            f"model must be built (called once or given an Input). Received unbuilt {model.name!r}."
        )
