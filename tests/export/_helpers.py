"""Helpers of the export tests: Keras outputs, weight snapshots, int8 tensors of a file, quantized cases."""

from __future__ import annotations

import keras
import numpy as np

from keras_hessian import layers as kh_layers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _keras_outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float32)


def _snapshot(model):
    return [np.array(w) for w in model.get_weights()], [
        layer.dtype_policy.name for layer in model.layers
    ]


def _assert_unchanged(model, snapshot):
    weights, policies = _snapshot(model)
    assert policies == snapshot[1]
    for before, after in zip(snapshot[0], weights):
        np.testing.assert_array_equal(before, after)


def _int8_weights(path):
    """Dequantized int8 constant tensors of a file: {name: (int values, scales, float)}."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] != np.int8 or len(detail["shape"]) < 2:
            continue
        try:
            values = interpreter.get_tensor(detail["index"])
        except ValueError:  # activations have no data before invoke
            continue
        scales = detail["quantization_parameters"]["scales"]
        axis = detail["quantization_parameters"]["quantized_dimension"]
        shape = [1] * values.ndim
        shape[axis] = -1
        found[detail["name"]] = (values, scales, values * scales.reshape(shape))
    return found


# (layer factory, input shape): every quantized layer type of keras-hessian, with and
# without an input quantizer.
QUANTIZED_CASES = {
    "BinaryDense": (lambda: kh_layers.BinaryDense(32, per_channel_scale=True), (64,)),
    "BinaryDense-binary-inputs": (
        lambda: kh_layers.BinaryDense(32, binary_activations=True, activation="relu"),
        (64,),
    ),
    "BinaryConv2D": (
        lambda: kh_layers.BinaryConv2D(8, 3, per_channel_scale=True, padding="same"),
        (8, 8, 1),
    ),
    "BinaryConv1D": (lambda: kh_layers.BinaryConv1D(8, 5, strides=2), (40, 1)),
    "TernaryResidualDense": (
        lambda: kh_layers.TernaryResidualDense(32, block_size=16, residuals=2),
        (64,),
    ),
    "TernaryResidualDense-dfp-inputs": (
        lambda: kh_layers.TernaryResidualDense(
            32, residuals=1, input_quantizer=kh_layers.DFP16(precision=8), activation="relu"
        ),
        (64,),
    ),
    "TernaryResidualConv2D": (
        lambda: kh_layers.TernaryResidualConv2D(8, 3, block_size=4, residuals=1),
        (8, 8, 1),
    ),
    "TernaryResidualConv1D": (lambda: kh_layers.TernaryResidualConv1D(8, 3), (40, 1)),
    # Chunks of 4 products keep these int32 accumulators in range (see the test below).
    "DFP16Dense": (
        lambda: kh_layers.DFP16Dense(32, activation="relu", accumulation_chunk=4),
        (64,),
    ),
    "DFP16Conv2D": (lambda: kh_layers.DFP16Conv2D(8, 3, padding="same"), (8, 8, 1)),
    "DFP16Conv1D": (lambda: kh_layers.DFP16Conv1D(8, 3), (40, 1)),
}


def _single_layer_model(name):
    factory, shape = QUANTIZED_CASES[name]
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input(shape), factory(), keras.layers.Flatten(), keras.layers.Dense(10)]
    )


def _inputs_for(shape, count=64):
    rng = np.random.default_rng(1)
    return rng.normal(size=(count, *shape)).astype(np.float32)
