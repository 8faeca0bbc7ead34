"""Quantized layers: built into a model directly, or swapped into a trained one with `quantize_model`.

    python examples/swap_in_quantized_layers.py            # about a minute on 2 cores
    python examples/swap_in_quantized_layers.py --quick    # (or KERAS_HESSIAN_EXAMPLE_QUICK=1) seconds

All quantized layers train with straight-through gradients, save and load like Keras layers.
"""

import os
import sys

import keras

from keras_hessian import quantization_summary, quantize_model
from keras_hessian.data import load_digits
from keras_hessian.layers import BinaryConv2D, DFP16Dense, TernaryResidualDense
from keras_hessian.models import compact_cnn, compile_classifier

QUICK = "--quick" in sys.argv or os.environ.get("KERAS_HESSIAN_EXAMPLE_QUICK") == "1"
epochs = 1 if QUICK else 5
(x, y), (x_test, y_test) = load_digits()
keras.utils.set_random_seed(0)

# 1. Quantized layers used directly: quantization-aware training from the start.
direct = compile_classifier(keras.Sequential([
    keras.Input((8, 8, 1)),
    keras.layers.Conv2D(16, 3, activation="relu"),                       # first layer kept float32
    BinaryConv2D(32, 3, activation="relu", per_channel_scale=True),      # sign weights times a scale
    keras.layers.Flatten(),
    TernaryResidualDense(64, block_size=64, residuals=2, activation="relu", name="ternary"),
    DFP16Dense(10),                                                      # int16 mantissas, shared exponent
]))
direct.fit(x[:512] if QUICK else x, y[:512] if QUICK else y, epochs=epochs, batch_size=64, verbose=0)
print("built quantized, test accuracy:", direct.evaluate(x_test, y_test, verbose=0)[1])
direct.get_layer("ternary").active_residuals = 1                        # cheaper at inference, no retraining
print("with one ternary residual:", direct.evaluate(x_test, y_test, verbose=0)[1])

# 2. A trained float model, quantized after the fact into a NEW model, then fine-tuned.
model = compile_classifier(compact_cnn((8, 8, 1)))
model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
quantized = compile_classifier(quantize_model(model, "ternary_residual"), learning_rate=1e-3)
print("post-training ternary-residual:", quantized.evaluate(x_test, y_test, verbose=0)[1])
quantized.fit(x[:256] if QUICK else x, y[:256] if QUICK else y, epochs=1, batch_size=64, verbose=0)
print("after one fine-tune epoch:", quantized.evaluate(x_test, y_test, verbose=0)[1])
print(quantization_summary(quantized, print_fn=None))
