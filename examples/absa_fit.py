"""ABSA inside one `model.fit`: the batch grows when the top Hessian eigenvalue falls, with FGSM examples mixed in.

    python examples/absa_fit.py            # about a minute on 2 cores
    python examples/absa_fit.py --quick    # (or KERAS_HESSIAN_EXAMPLE_QUICK=1) seconds

Yao et al., "Large batch size training of neural networks with adversarial training and
second-order information" (arXiv 1810.01021). The batch size, learning rate and eigenvalue are
in `logs`, so in History, CSVLogger and TensorBoard.
"""

import os
import sys

import keras

from keras_hessian.callbacks import training_callbacks
from keras_hessian.data import adaptive_dataset, load_mnist1d
from keras_hessian.models import compact_cnn

QUICK = "--quick" in sys.argv or os.environ.get("KERAS_HESSIAN_EXAMPLE_QUICK") == "1"

(x, y), (x_test, y_test) = load_mnist1d(num_samples=1000 if QUICK else 5000)
keras.utils.set_random_seed(0)
model = compact_cnn(x.shape[1:])
model.compile(keras.optimizers.SGD(0.02, momentum=0.9),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
callbacks = training_callbacks("absa", hessian_data=(x[:256], y[:256]), base_batch_size=32, large_batch_size=1024,
                               lr_scaling="sqrt", patience=4)
history = model.fit(adaptive_dataset(x, y, seed=0), epochs=2 if QUICK else 15, validation_data=(x_test, y_test),
                    callbacks=callbacks, shuffle=False, verbose=2)
for epoch, (batch, eigenvalue) in enumerate(zip(history.history["batch_size"],
                                                 history.history["hessian/top_eigenvalue"]), start=1):
    print(f"epoch {epoch}: batch {int(batch)}, top eigenvalue {eigenvalue:.4g}")
print("SGD iterations:", int(model.optimizer.iterations.numpy()))
