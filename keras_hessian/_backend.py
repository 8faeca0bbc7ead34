"""The one check that keras-hessian runs on Keras 3 with the TensorFlow backend."""

import keras


def require_tensorflow_backend() -> None:
    """Raise a clear error unless Keras runs on the TensorFlow backend."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            "keras-hessian needs the TensorFlow backend of Keras "
            f"(set KERAS_BACKEND=tensorflow). Received keras.backend.backend()={backend!r}."
        )
