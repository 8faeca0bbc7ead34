"""Optimal Brain Damage pruning inside `model.fit` on a TFMOT schedule, then quantization on top.

    python examples/prune_and_quantize.py            # about a minute on 2 cores
    python examples/prune_and_quantize.py --quick    # (or KERAS_HESSIAN_EXAMPLE_QUICK=1) seconds

OBD ranks weights by their Hessian-diagonal saliency h_ii w_i^2 / 2. The pruned model is stored
sparse (pruned.tflite), and quantized to int8 by `quantize_model` with its zeros kept
(pruned_int8.tflite; dense int8 storage: LiteRT's XNNPACK cannot run sparse int8 weights).
"""

import math
import os
import sys

import keras
import numpy as np

from keras_hessian import quantize_model
from keras_hessian.callbacks import PruneDuringTraining, pruning_schedule
from keras_hessian.data import load_digits
from keras_hessian.export import evaluate_tflite, to_tflite
from keras_hessian.models import compile_classifier, lenet_300_100
from keras_hessian.pruning import sparsity_summary, strip_pruning

QUICK = "--quick" in sys.argv or os.environ.get("KERAS_HESSIAN_EXAMPLE_QUICK") == "1"
epochs = 1 if QUICK else 4
(x, y), (x_test, y_test) = load_digits(image=False)
if QUICK:
    x, y = x[:512], y[:512]
keras.utils.set_random_seed(0)
model = compile_classifier(lenet_300_100(64), learning_rate=1e-3)
model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)

steps = epochs * math.ceil(len(x) / 64)
# 0 -> 90% over the first 2/3 of the steps, in a few mask updates (each one a Hessian diagonal).
schedule = pruning_schedule("polynomial", 0.9, steps, updates=2 if QUICK else 5)
hessian_data = (x[:64], y[:64]) if QUICK else (x[:256], y[:256])
callback = PruneDuringTraining(schedule, criterion="obd", data=hessian_data, num_probes=4 if QUICK else 16, seed=0)
compile_classifier(model, learning_rate=1e-3)                      # a fresh optimizer: the schedule counts from 0
model.fit(x, y, epochs=epochs, batch_size=64, callbacks=[callback], verbose=0)
pruned = compile_classifier(strip_pruning(model))                  # plain Keras model, zeros kept
print(sparsity_summary(pruned))
to_tflite(pruned, "pruned.tflite", sparse=True)                    # pruned tensors in TFLite's sparse format
print("pruned, sparse float32:", evaluate_tflite("pruned.tflite", (x_test, y_test)))

quantized = quantize_model(pruned, {"scheme": "integer", "bits": 8})  # symmetric: a zero stays zero
kernel = quantized.get_layer("fc_2").quantized_kernel()              # first and last layers stay float32
print(f"zeros kept by int8: {float(np.mean(keras.ops.convert_to_numpy(kernel) == 0)):.3f}")
to_tflite(quantized, "pruned_int8.tflite")
print("pruned, int8 weights:", evaluate_tflite("pruned_int8.tflite", (x_test, y_test)))
