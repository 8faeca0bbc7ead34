"""HAWQ: the Hessian decides each layer's precision under a size budget; apply, fine-tune, export.

    python examples/hawq_plan.py            # about a minute on 2 cores
    python examples/hawq_plan.py --quick    # (or KERAS_HESSIAN_EXAMPLE_QUICK=1) seconds

Per-layer sensitivity is the average Hessian trace per weight (HAWQ-V2); the allocation is the
exact integer program of HAWQ-V3. Writes plan.json, sensitivity.png and hawq.tflite here.
"""

import os
import sys

import keras

from keras_hessian import quantize_model
from keras_hessian.data import load_digits
from keras_hessian.export import evaluate_tflite, to_tflite
from keras_hessian.hawq import PrecisionPlan, assign_precision
from keras_hessian.models import compact_cnn, compile_classifier
from keras_hessian.plots import plot_sensitivity

QUICK = "--quick" in sys.argv or os.environ.get("KERAS_HESSIAN_EXAMPLE_QUICK") == "1"
(x, y), (x_test, y_test) = load_digits()
keras.utils.set_random_seed(0)
model = compile_classifier(compact_cnn((8, 8, 1)))
model.fit(x, y, epochs=1 if QUICK else 5, batch_size=64, verbose=0)

examples = 64 if QUICK else 512
plan = assign_precision(model, (x[:examples], y[:examples]), ["int8", "int4", "ternary", "binary"], budget=0.1,
                        tol=5e-2 if QUICK else 1e-2)   # tol: the sensitivities' relative standard error
print(plan.table())                                   # layer, parameters, sensitivity, precision, bytes
plot_sensitivity(plan, "sensitivity.png")
plan.save("plan.json")
assert PrecisionPlan.load("plan.json").precisions == plan.precisions

quantized = compile_classifier(quantize_model(model, plan), learning_rate=1e-3)
quantized.fit(x, y, epochs=1 if QUICK else 2, batch_size=64, verbose=0)
to_tflite(quantized, "hawq.tflite")                   # each layer stored at its planned width
print("LiteRT:", evaluate_tflite("hawq.tflite", (x_test, y_test)))
