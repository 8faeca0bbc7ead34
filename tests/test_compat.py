"""_compat: each private Keras symbol we use still exists and means what we rely on."""

from __future__ import annotations

import configparser
import importlib.metadata
import pathlib
import re

import keras
import numpy as np
import tensorflow as tf

from keras_hessian import _compat

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _two_output_model():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(2, name="a")(inputs)
    b = keras.layers.Dense(3, name="b", kernel_regularizer=keras.regularizers.L2(0.01))(inputs)
    model = keras.Model(inputs, [a, b])
    model.compile("sgd", ["mse", "mae"], loss_weights=[1.0, 2.0])
    return model


def test_detached_compiled_loss_equals_the_loss_by_hand_and_leaves_metrics_alone():
    model = _two_output_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    ya, yb = rng.normal(size=(8, 2)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")
    model.evaluate(x, [ya, yb], verbose=0)
    before = [v.numpy().copy() for metric in model.metrics for v in metric.variables]
    loss = _compat.detached_compiled_loss(model)
    pa, pb = (p.numpy() for p in model(x))
    by_hand = np.mean((pa - ya) ** 2) + 2.0 * np.mean(np.abs(pb - yb))
    np.testing.assert_allclose(float(loss([ya, yb], model(x))), by_hand, rtol=1e-6)
    after = [v.numpy().copy() for metric in model.metrics for v in metric.variables]
    assert all(np.array_equal(p, q) for p, q in zip(before, after))


def test_detached_compiled_loss_of_an_uncompiled_model_is_none():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert _compat.detached_compiled_loss(model) is None and _compat.compiled_loss(model) is None


def test_private_trainer_symbols_exist():
    model = _two_output_model()
    assert callable(_compat.default_train_step())
    assert type(model).train_step is _compat.default_train_step()
    assert isinstance(_compat.loss_tracker(model), keras.metrics.Mean)
    assert float(_compat.unscale_loss_for_distribution(tf.constant(3.0))) == 3.0  # one replica: unchanged
    nested = keras.Sequential([keras.Input((4,)), keras.Sequential([keras.layers.Dense(2, name="inner")])])
    assert "inner" in [layer.name for layer in _compat.flatten_layers(nested)]


def test_setup_cfg_lower_bounds_are_the_tested_versions():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requires = config["options"]["install_requires"]
    for package, version in _compat.TESTED_VERSIONS.items():
        major_minor = ".".join(version.split(".")[:2])
        assert re.search(rf"^{package}>={re.escape(major_minor)}\b", requires, re.MULTILINE), (package, requires)
        # ... and an upper bound below the next minor release: CI tests exactly this one.
        next_minor = f"{version.split('.')[0]}.{int(version.split('.')[1]) + 1}"
        assert re.search(rf"^{package}>=[^\n]*<{re.escape(next_minor)}\b", requires, re.MULTILINE), (package, requires)
        installed = importlib.metadata.version(package)
        assert installed.split(".")[:2] == version.split(".")[:2], (package, installed, version)


def test_no_private_keras_symbol_outside_compat():
    offenders = []
    for path in (ROOT / "keras_hessian").rglob("*.py"):
        if path.name == "_compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            private = r"\bkeras\.src\b|tensorflow\.python\b|\b(model|layer|optimizer)\._[a-z]"
            if re.search(private, code) or re.search(r"getattr\((model|layer|optimizer), [\"']_[a-z]", code):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_type_hints_are_shipped_with_a_py_typed_marker():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert (ROOT / "keras_hessian" / "py.typed").is_file()
    assert "py.typed" in config["options.package_data"]["keras_hessian"]


def test_is_functional_and_graph_nodes_read_the_graph_keras_runs():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="dense")
    hidden = dense(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(hidden, training=False) + hidden)
    keras.Model(inputs, dense(inputs))  # another model's node on the same layer is not in this graph
    assert _compat.is_functional(model) and not _compat.is_functional(keras.Sequential([keras.Input((2,))]))
    nodes = _compat.graph_nodes(model)
    names = [operation.name for operation, *_ in nodes]
    assert names.count("dense") == 1 and "bn" in names and len(nodes) == 3
    bn = next(node for node in nodes if node[0].name == "bn")
    assert bn[1] == [hidden] and bn[3] == {"training": False}


def test_swap_dtype_policy_changes_the_compute_dtype_and_undoes_exactly():
    layer = keras.layers.Dense(2, dtype="mixed_bfloat16")
    layer.build((None, 3))
    original = layer.dtype_policy
    previous = _compat.swap_dtype_policy(layer, keras.DTypePolicy("float32"))
    assert previous is original and layer.compute_dtype == "float32"
    assert layer(np.ones((1, 3), np.float32)).dtype == tf.float32
    _compat.swap_dtype_policy(layer, previous)
    assert layer.dtype_policy is original and layer(np.ones((1, 3), np.float32)).dtype == tf.bfloat16
