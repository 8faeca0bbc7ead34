"""Small reference models used by the demo, the CLI, examples and benchmarks."""

from __future__ import annotations

import keras


def small_cnn(input_shape: tuple[int, ...] = (8, 8, 1), classes: int = 10, filters: int = 16) -> keras.Model:
    """A two-convolution CNN for 8x8 digits (2-D input) or MNIST-1D (1-D input), logits out.

    Args:
        input_shape: `(height, width, channels)` for Conv2D or `(length, channels)` for Conv1D.
        classes: number of output logits.
        filters: filters of the first convolution (the second has twice as many).
    """
    if len(input_shape) not in (2, 3):
        raise ValueError(f"input_shape must have 2 (1-D signals) or 3 (images) dimensions. Received {input_shape}.")
    conv = keras.layers.Conv2D if len(input_shape) == 3 else keras.layers.Conv1D
    pool = keras.layers.MaxPooling2D if len(input_shape) == 3 else keras.layers.MaxPooling1D
    return keras.Sequential(
        [
            keras.Input(input_shape),
            conv(filters, 3, padding="same", activation="relu", name="conv_1"),
            pool(2, name="pool_1"),
            conv(2 * filters, 3, padding="same", activation="relu", name="conv_2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="dense_1"),
            keras.layers.Dense(classes, name="logits"),
        ],
        name="small_cnn",
    )


def strided_cnn(input_shape: tuple[int, ...] = (40, 1), classes: int = 10) -> keras.Model:
    """Three convolutions (the last two with stride 2) and a linear classifier, logits out.

    The model of the ABSA table (`keras-hessian train`, `benchmarks/absa_table.py`): 15,914
    parameters on MNIST-1D. A 1-D input `(length, channels)` gets Conv1D layers with a first
    kernel of 5; an image `(height, width, channels)` gets Conv2D layers with a first kernel of 3.

    Args:
        input_shape: `(length, channels)` for Conv1D or `(height, width, channels)` for Conv2D.
        classes: number of output logits.
    """
    if len(input_shape) not in (2, 3):
        raise ValueError(f"input_shape must have 2 (1-D signals) or 3 (images) dimensions. Received {input_shape}.")
    conv = keras.layers.Conv2D if len(input_shape) == 3 else keras.layers.Conv1D
    return keras.Sequential(
        [
            keras.Input(input_shape),
            conv(32, 3 if len(input_shape) == 3 else 5, padding="same", activation="relu"),
            conv(32, 3, strides=2, padding="same", activation="relu"),
            conv(64, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(classes),
        ],
        name="strided_cnn",
    )


def compact_cnn(
    input_shape: tuple[int, ...] = (8, 8, 1), classes: int = 10, output_activation: str | None = None
) -> keras.Model:
    """The CNN of the quantization and export benchmarks: digits (2-D) or MNIST-1D (1-D) input.

    Digits: Conv2D(16, 3, same) -> Conv2D(32, 3) -> Dense(64) -> logits (about 44k float32
    bytes of weights). MNIST-1D: Conv1D(32, 5, same) -> two Conv1D(32, 3, stride 2) -> Dense(64)
    -> logits. Each layer is named (`conv_1`, ..., `dense`, `logits`) so plans can name them.

    Args:
        input_shape: `(8, 8, 1)` style for images, `(length, channels)` for 1-D signals.
        classes: number of outputs.
        output_activation: `None` for logits, or e.g. `"softmax"`.
    """
    if len(input_shape) == 3:
        convolutions = [
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv_2"),
        ]
    elif len(input_shape) == 2:
        convolutions = [
            keras.layers.Conv1D(32, 5, padding="same", activation="relu", name="conv_1"),
            keras.layers.Conv1D(32, 3, strides=2, padding="same", activation="relu", name="conv_2"),
            keras.layers.Conv1D(32, 3, strides=2, padding="same", activation="relu", name="conv_3"),
        ]
    else:
        raise ValueError(f"input_shape must have 2 (1-D signals) or 3 (images) dimensions. Received {input_shape}.")
    return keras.Sequential(
        [
            keras.Input(input_shape),
            *convolutions,
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dense(classes, activation=output_activation, name="logits"),
        ],
        name="compact_cnn",
    )


def small_mlp(input_dim: int = 64, hidden: int = 32, classes: int = 10) -> keras.Model:
    """A one-hidden-layer MLP (tanh), logits out."""
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(hidden, activation="tanh", name="hidden"),
            keras.layers.Dense(classes, name="logits"),
        ],
        name="small_mlp",
    )


def lenet_300_100(input_dim: int = 64, classes: int = 10) -> keras.Model:
    """LeNet-300-100 (LeCun et al. 1998; the MLP of Han et al.'s pruning results), logits out.

    Two ReLU hidden layers of 300 and 100 units (`fc_1`, `fc_2`) and `logits`; on flattened
    8x8 digits (64 inputs) it has 50,810 parameters.
    """
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(300, activation="relu", name="fc_1"),
            keras.layers.Dense(100, activation="relu", name="fc_2"),
            keras.layers.Dense(classes, name="logits"),
        ],
        name="lenet_300_100",
    )


def compile_classifier(model: keras.Model, learning_rate: float = 1e-2) -> keras.Model:
    """Compile with Adam, sparse categorical cross-entropy on logits, and accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
