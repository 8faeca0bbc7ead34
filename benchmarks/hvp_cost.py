"""Cost of one Hessian-vector product relative to one gradient, per method, with and without XLA.

A ~100k-parameter CNN on 28x28 inputs, batch 256, on this machine. Every timing is the median
of repeated calls of an already-compiled function, all measured side by side in one run.
Writes benchmarks/results/hvp_cost.json.

    python benchmarks/hvp_cost.py            # full (about 1-2 minutes on 2 cores)
    python benchmarks/hvp_cost.py --quick    # small model, few repeats (smoke test)
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np
import tensorflow as tf

from benchmarks._common import parser, write_results
from keras_hessian.hessian import HessianOperator
from keras_hessian.hessian.operators import AUTODIFF_HVP_METHODS, DEFAULT_HVP_METHOD, tf_variable


def build_cnn(quick: bool, pooling: str = "max") -> keras.Model:
    size, filters = (20, 8) if quick else (28, 32)
    pool = {"max": keras.layers.MaxPooling2D, "average": keras.layers.AveragePooling2D}[pooling]
    model = keras.Sequential(
        [
            keras.Input((size, size, 1)),
            keras.layers.Conv2D(filters, 3, activation="relu"),
            pool(2),
            keras.layers.Conv2D(2 * filters, 3, activation="relu"),
            pool(2),
            keras.layers.Conv2D(2 * filters, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64 if not quick else 16, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def median_ms_interleaved(functions: dict, repeats: int) -> dict:
    """Median milliseconds per call of each function, timed round-robin (one call of each per
    round) so that load changes on the machine hit every candidate alike."""
    for fn in functions.values():
        tf.nest.map_structure(lambda t: t.numpy(), fn())  # compile / warm up
    times: dict = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fn())
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def run(quick: bool = False, out: str | None = None) -> dict:
    keras.utils.set_random_seed(0)
    model = build_cnn(quick)
    batch = 64 if quick else 256
    repeats = 3 if quick else 30
    size = model.input_shape[1]
    x = np.random.default_rng(0).random((batch, size, size, 1), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, batch).astype("int32")
    variables = [tf_variable(v) for v in model.trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def gradient(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=False))
        return tape.gradient(loss, variables)

    x_t, y_t = tf.constant(x), tf.constant(y)
    results: dict = {"parameters": int(model.count_params()), "batch_size": batch, "repeats": repeats, "hvp_ms": {}, "ratio": {}}
    compiled_gradient = tf.function(gradient)
    compiled_gradient_xla = tf.function(gradient, jit_compile=True)
    functions = {
        "gradient": lambda: compiled_gradient(x_t, y_t),
        "gradient_xla": lambda: compiled_gradient_xla(x_t, y_t),
    }
    vector = [tf.random.normal(v.shape, seed=i) for i, v in enumerate(variables)]
    products = {}
    for method in AUTODIFF_HVP_METHODS:
        op = HessianOperator(model, (x, y), method=method, batch_size=batch)
        fn = op._function("hvp", batch)
        packed = op._pack(op._data.first)
        functions[method] = lambda fn=fn, packed=packed: fn(packed, vector)
        products[method] = np.concatenate([t.numpy().ravel() for t in fn(packed, vector)])
        # The same product compiled with XLA (the operator's own function body, jit-compiled).
        xla = tf.function(fn.python_function, jit_compile=True)
        functions[method + "_xla"] = lambda xla=xla, packed=packed: xla(packed, vector)
        # The same body traced for any batch size (what the operator uses for a last, smaller
        # batch): the cost of giving up static shapes.
        generic = op._function("hvp", None)
        functions[method + "_any_batch_size"] = lambda generic=generic, packed=packed: generic(packed, vector)
        # End to end through the public API (batch loop, weighting, checks included).
        functions[method + "_public_api"] = lambda op=op: op.hvp(vector)
    # The finite difference (two gradient passes around a host-side perturbation) has no
    # per-batch compiled product: only its public-API cost.
    finite = HessianOperator(model, (x, y), method="finite_difference", batch_size=batch)
    functions["finite_difference_public_api"] = lambda: finite.hvp(vector)
    # Batched products (trace probes, SLQ runs): one forward and first-order backward pass
    # shared by k vectors; reported per vector. 32 shows the limit: what one more vector costs
    # (the outer backward pass alone, through both the first-order and the forward graph).
    batched = (8,) if quick else (8, 32)
    op = HessianOperator(model, (x, y), method="reverse_over_reverse", batch_size=batch)
    packed = op._pack(op._data.first)
    for k in batched:
        many, stacked = op._function(f"hvp_many_{k}", batch), [tf.stack([t] * k) for t in vector]
        functions[f"reverse_over_reverse_batched_{k}"] = lambda many=many, stacked=stacked: many(packed, stacked)
    # PyHessian's reuse: one forward and first-order backward pass, then a chain of products
    # (power-iteration style, each vector depends on the last) taken from the kept graph. The
    # marginal cost of one more product is (T(chain of 5) - T(chain of 1)) / 4.
    def chained(n):
        @tf.function
        def chain(xb, yb, start):
            with tf.GradientTape() as outer:
                outer.watch(variables)
                with tf.GradientTape() as inner:
                    loss = loss_fn(yb, model(xb, training=False))
                grads = inner.gradient(loss, variables)

            def step(i, *v):
                hv = outer.gradient(grads, variables, output_gradients=list(v))
                norm = tf.sqrt(tf.add_n([tf.reduce_sum(t * t) for t in hv]))
                return (i + 1, *[t / norm for t in hv])

            return tf.while_loop(lambda i, *v: i < n, step, (0, *start))[1:]

        return lambda: chain(x_t, y_t, vector)

    functions["reused_first_order_chain_1"] = chained(1)
    functions["reused_first_order_chain_5"] = chained(5)
    functions.update(pooling_functions(model, quick, x, y, vector))
    timings = median_ms_interleaved(functions, repeats)
    results["pooling"] = {name: timings.pop(name) for name in list(timings) if name.startswith("pooling_")}
    timings["reverse_over_reverse_reused_first_order_marginal"] = (
        timings.pop("reused_first_order_chain_5") - timings.pop("reused_first_order_chain_1")
    ) / 4
    for k in batched:
        timings[f"reverse_over_reverse_batched_{k}_per_vector"] = timings.pop(f"reverse_over_reverse_batched_{k}") / k
    results["gradient_ms"] = timings.pop("gradient")
    results["gradient_xla_ms"] = timings.pop("gradient_xla")
    results["hvp_ms"] = timings
    for name, ms in results["hvp_ms"].items():
        results["ratio"][name] = ms / results["gradient_ms"]
    a, b = products[AUTODIFF_HVP_METHODS[0]], products[AUTODIFF_HVP_METHODS[1]]
    results["method_agreement_relative"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    results["fastest_method"] = min(AUTODIFF_HVP_METHODS, key=lambda m: results["hvp_ms"][m])
    results["default_method"] = DEFAULT_HVP_METHOD

    print(f"CNN with {results['parameters']} parameters, batch {batch}, median of {repeats} interleaved calls")
    print(f"{'what':40s} {'ms':>9s} {'x gradient':>11s}")
    print(f"{'gradient':40s} {results['gradient_ms']:9.2f} {1.0:11.2f}")
    print(f"{'gradient (XLA)':40s} {results['gradient_xla_ms']:9.2f} {results['gradient_xla_ms'] / results['gradient_ms']:11.2f}")
    for name, ms in results["hvp_ms"].items():
        print(f"{'HVP ' + name:40s} {ms:9.2f} {results['ratio'][name]:11.2f}")
    print(f"agreement of the two methods (relative): {results['method_agreement_relative']:.2e}")
    print(f"fastest: {results['fastest_method']}; default: {results['default_method']}")
    pooling = results["pooling"]
    hvp_ms, gradient_ms = pooling["pooling_average_hvp"], pooling["pooling_average_gradient"]
    print(
        f"the same CNN with average pooling: HVP {hvp_ms:.2f} ms / gradient {gradient_ms:.2f} ms = "
        f"{hvp_ms / gradient_ms:.2f}x"
    )
    print(
        "first max-pool layer's kernels (ms): forward {pooling_kernel_max_pool:.2f}, MaxPoolGrad "
        "{pooling_kernel_max_pool_grad:.2f}, MaxPoolGradGrad {pooling_kernel_max_pool_grad_grad:.2f}".format(**pooling)
    )
    if out is not None or not quick:  # a quick run writes only where it is told to
        write_results("hvp_cost", results, out)
    return results


def pooling_functions(model, quick: bool, x, y, vector) -> dict:
    """Where the product's excess over 2x sits: the same CNN with average pooling (same weights),
    and TensorFlow's CPU kernels of the first max-pool layer: forward, its gradient (MaxPoolGrad,
    in the gradient once and in the product twice) and the gradient of that (MaxPoolGradGrad,
    in the product only). Kernel outputs are summed on the device, so no large copy is timed."""
    from tensorflow.python.ops import gen_nn_ops

    average = build_cnn(quick, "average")
    average.set_weights(model.get_weights())
    batch = len(x)
    op = HessianOperator(average, (x, y), method=DEFAULT_HVP_METHOD, batch_size=batch)
    fn, packed = op._function("hvp", batch), op._pack(op._data.first)
    variables = [tf_variable(v) for v in average.trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x_t, y_t = tf.constant(x), tf.constant(y)

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            loss = loss_fn(y_t, average(x_t, training=False))
        return tape.gradient(loss, variables)

    features = tf.constant(np.maximum(model.layers[0](x).numpy(), 0.0))
    window = {"ksize": [1, 2, 2, 1], "strides": [1, 2, 2, 1], "padding": "VALID"}
    pooled = tf.nn.max_pool2d(features, 2, 2, "VALID")
    upstream = tf.random.normal(pooled.shape, seed=7)
    second = tf.random.normal(features.shape, seed=8)
    kernels = {
        "max_pool": tf.function(lambda: tf.reduce_sum(tf.nn.max_pool2d(features, 2, 2, "VALID"))),
        "max_pool_grad": tf.function(
            lambda: tf.reduce_sum(gen_nn_ops.max_pool_grad(features, pooled, upstream, **window))
        ),
        "max_pool_grad_grad": tf.function(
            lambda: tf.reduce_sum(gen_nn_ops.max_pool_grad_grad(features, pooled, second, **window))
        ),
    }
    return {
        "pooling_average_gradient": gradient,
        "pooling_average_hvp": lambda: fn(packed, vector),
        **{f"pooling_kernel_{name}": kernel for name, kernel in kernels.items()},
    }


if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    run(args.quick, args.out)
