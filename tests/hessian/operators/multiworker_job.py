"""One worker of the two-process MultiWorkerMirroredStrategy test (run by test_replicas.py).

Usage: python multiworker_job.py TF_CONFIG_JSON OUT.npz
"""

import json
import os
import sys

os.environ["TF_CONFIG"] = sys.argv[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from keras_hessian.data import load_digits
from keras_hessian.hessian import HessianOperator, top_eigenvalues

strategy = tf.distribute.MultiWorkerMirroredStrategy()
(x, y), _ = load_digits(image=False)
x, y = x[:203], y[:203]
keras.utils.set_random_seed(0)
with strategy.scope():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(10)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
op = HessianOperator(model, (x, y), batch_size=64)
rng = np.random.default_rng(1)
v = [tf.constant(rng.standard_normal(w.shape), tf.float32) for w in op.variables]
hv = np.concatenate([t.numpy().ravel() for t in op.hvp(v)])
top = top_eigenvalues(op, k=1, seed=0).eigenvalues
np.savez(
    sys.argv[2],
    hv=hv,
    v=np.concatenate([t.numpy().ravel() for t in v]),
    top=top,
    replicas=strategy.num_replicas_in_sync,
    task=json.loads(sys.argv[1])["task"]["index"],
    **{f"w{i}": w for i, w in enumerate(model.get_weights())},
)
