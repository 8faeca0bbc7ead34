"""A trained Keras model to TFLite in each storage mode, checked with the LiteRT interpreter.

    python examples/export_tflite.py            # about a minute on 2 cores
    python examples/export_tflite.py --quick    # (or KERAS_HESSIAN_EXAMPLE_QUICK=1) seconds

`to_tflite` converts a float32 inference copy (the model is never changed) and writes
atomically; `parity_report` compares the file with the Keras model, `evaluate_tflite` times it.
"""

import os
import sys

import keras

from keras_hessian.data import load_digits
from keras_hessian.export import evaluate_tflite, parity_report, to_tflite
from keras_hessian.models import compact_cnn, compile_classifier

QUICK = "--quick" in sys.argv or os.environ.get("KERAS_HESSIAN_EXAMPLE_QUICK") == "1"
(x, y), (x_test, y_test) = load_digits()
keras.utils.set_random_seed(0)
model = compile_classifier(compact_cnn((8, 8, 1)))
model.fit(x, y, epochs=1 if QUICK else 5, batch_size=64, verbose=0)

for mode in ("float32", "float16", "dynamic_int8", "int8"):
    path = to_tflite(model, f"model_{mode}.tflite", mode=mode, representative_data=x[:200])
    parity = parity_report(model, path, (x_test, y_test))
    timing = evaluate_tflite(path, (x_test, y_test), latency_examples=20 if QUICK else 100, num_threads=1)
    print(f"{mode:>12}: {timing['file_bytes']:>7,} bytes, top-1 agreement {parity['top1_agreement']:.3f}, "
          f"LiteRT accuracy {timing['accuracy']:.4f}, {timing['latency_ms']:.3f} ms per example")
