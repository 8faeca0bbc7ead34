"""The Hessian spectrum of a Keras model: top eigenvalues, trace, per-layer table, density plot.

    python examples/spectrum_of_my_model.py            # about a minute on 2 cores
    python examples/spectrum_of_my_model.py --quick    # (or KERAS_HESSIAN_EXAMPLE_QUICK=1) seconds

Replace `model` and `(x, y)` by your own built, compiled model and a few hundred examples.
Writes density.png in the current directory.
"""

import os
import sys

import keras

from keras_hessian import HessianOperator, hutchinson_trace, spectral_density, top_eigenvalues
from keras_hessian.data import load_digits
from keras_hessian.hessian import layer_table
from keras_hessian.models import compact_cnn, compile_classifier
from keras_hessian.plots import plot_density

QUICK = "--quick" in sys.argv or os.environ.get("KERAS_HESSIAN_EXAMPLE_QUICK") == "1"
examples = 64 if QUICK else 512

keras.utils.set_random_seed(0)
(x, y), _ = load_digits()
model = compile_classifier(compact_cnn((8, 8, 1)))
model.fit(x, y, epochs=1 if QUICK else 5, batch_size=64, verbose=0)

operator = HessianOperator(model, (x[:examples], y[:examples]))   # the mean loss's Hessian, matrix-free
print("top eigenvalues:", top_eigenvalues(operator, k=3, tol=1e-2, seed=0).eigenvalues)
trace = hutchinson_trace(operator, max_iter=40 if QUICK else 400, tol=2e-2, seed=0)  # stops at 2% standard error
print(f"trace: {trace.trace:.4g} +- {trace.standard_error:.2g}")
per_layer = HessianOperator(model, (x[:examples], y[:examples]), blocks="layer")  # one diagonal block per layer
print(layer_table(per_layer, top_k=1, trace=not QUICK, seed=0))
density = spectral_density(operator, n_vectors=2 if QUICK else 16, lanczos_steps=12 if QUICK else 60,
                           deflation=2 if QUICK else 10, seed=0)
print("density written to", plot_density(density, "density.png"))
