"""PruneDuringTraining follows the TFMOT schedule, keeps pruned weights at zero, resumes exactly."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from tensorflow_model_optimization.sparsity.keras import ConstantSparsity, PolynomialDecay

from keras_hessian.callbacks import PruneDuringTraining
from keras_hessian.pruning import strip_pruning

BATCH = 32


def _model(seed: int = 0) -> keras.Sequential:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(24, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="pruned_mlp",
    )
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _expected_pruned(schedule, steps_begun: int, size: int) -> int:
    """Weights pruned after `steps_begun` batches: the schedule's sparsity at its last pruning
    step, with TFMOT's count (keep round(n * (1 - s)))."""
    sparsity = 0.0
    for step in range(steps_begun):
        should, value = schedule(step)
        if bool(should) and float(value) > 0:
            sparsity = float(value)
    return 0 if sparsity == 0 else size - round(size * (1 - sparsity))


class Record(keras.callbacks.Callback):
    """After every batch: the zero count of each kernel, and the logged sparsity."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        row = {layer.name: int(np.sum(layer.kernel.numpy() == 0)) for layer in self.model.layers}
        row["logged"] = logs.get("pruning/sparsity")
        row["step"] = int(self.model.optimizer.iterations.numpy())
        self.rows.append(row)


@pytest.mark.parametrize(
    "schedule",
    [PolynomialDecay(0.0, 0.9, begin_step=2, end_step=30, frequency=4), ConstantSparsity(0.75, begin_step=0, frequency=10)],
    ids=["polynomial", "constant"],
)
def test_sparsity_follows_the_schedule_step_by_step(digits_flat, schedule):
    (x, y), _ = digits_flat
    model = _model()
    record = Record()
    callback = PruneDuringTraining(schedule)
    model.fit(x[:640], y[:640], batch_size=BATCH, epochs=2, verbose=0, shuffle=False, callbacks=[callback, record])
    assert len(record.rows) == 40
    sizes = {layer.name: layer.kernel.numpy().size for layer in model.layers}
    for row in record.rows:
        for name, size in sizes.items():
            # Exactly the schedule's count; a kept weight landing on 0.0 would be one more.
            expected = _expected_pruned(schedule, row["step"], size)
            assert expected <= row[name] <= expected + 1, (row, name, expected)
    final = record.rows[-1]
    assert final["logged"] == pytest.approx(sum(final[n] for n in sizes) / sum(sizes.values()), abs=2 / sum(sizes.values()))
    assert set(model.history.history) >= {"loss", "pruning/sparsity", "pruning/sparsity/hidden", "pruning/sparsity/logits"}
    assert "train_step" not in model.__dict__  # the model's own step is back


def test_pruned_weights_stay_zero_through_training_and_strip_keeps_outputs(digits_flat):
    (x, y), _ = digits_flat
    model = _model(1)
    callback = PruneDuringTraining(ConstantSparsity(0.8, begin_step=0, frequency=1000))

    class Watch(keras.callbacks.Callback):
        first_zeros = None

        def on_train_batch_end(self, batch, logs=None):
            zeros = {layer.name: layer.kernel.numpy() == 0 for layer in self.model.layers}
            if self.first_zeros is None:
                self.first_zeros = zeros
            for name, mask in self.first_zeros.items():
                assert np.all(zeros[name][mask]), f"a pruned weight of {name} moved at batch {batch}"

    model.fit(x[:512], y[:512], batch_size=BATCH, epochs=3, verbose=0, callbacks=[callback, Watch()])
    for layer in model.layers:
        np.testing.assert_array_equal(layer.kernel.numpy() == 0, ~callback.masks[layer.name])
    plain = strip_pruning(model)
    np.testing.assert_array_equal(plain.predict(x[:100], verbose=0), model.predict(x[:100], verbose=0))


def test_obd_and_filter_pruning_during_fit(digits_flat):
    (x, y), _ = digits_flat
    model = _model(2)
    callback = PruneDuringTraining(
        ConstantSparsity(0.5, begin_step=0, frequency=8), criterion="obd", granularity="filter", data=(x[:200], y[:200]),
        num_probes=8, seed=0,
    )
    model.fit(x[:256], y[:256], batch_size=BATCH, epochs=2, verbose=0, callbacks=[callback])
    kernel = model.layers[0].kernel.numpy()
    removed = ~kernel.any(axis=0)
    assert removed.sum() == 12 and np.all(model.layers[0].bias.numpy()[removed] == 0)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            self.masks = {layer.name: layer.kernel.numpy() == 0 for layer in self.model.layers}
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_with_the_same_masks(digits_flat, tmp_path):
    (x, y), _ = digits_flat
    # Step 20 (where the fit resumes) is not a pruning step: the masks there are the restored ones.
    schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=45, frequency=3)
    backup = str(tmp_path / "backup")
    interrupt = Interrupt()
    with pytest.raises(RuntimeError, match="interrupted"):
        _model(3).fit(
            x[:320], y[:320], batch_size=BATCH, epochs=6, verbose=0, shuffle=False,
            callbacks=[keras.callbacks.BackupAndRestore(backup), PruneDuringTraining(schedule), interrupt],
        )
    resumed = _model(4)  # a new process's model: other initial weights, a new callback

    class FirstBatch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not hasattr(self, "step"):
                self.step = int(self.model.optimizer.iterations.numpy())
                self.masks = {name: mask.copy() for name, mask in callback.masks.items()}

    callback, first = PruneDuringTraining(schedule), FirstBatch()
    resumed.fit(
        x[:320], y[:320], batch_size=BATCH, epochs=6, verbose=0, shuffle=False,
        callbacks=[callback, keras.callbacks.BackupAndRestore(backup), first],  # BackupAndRestore after ours: masks read at the first batch
    )
    assert first.step == 20  # two epochs of 10 steps were done
    for name, pruned in interrupt.masks.items():
        np.testing.assert_array_equal(~first.masks[name], pruned)  # restored exactly
        assert np.all(resumed.get_layer(name).kernel.numpy()[pruned] == 0)  # and still zero at the end
    # The schedule went on from step 20: at the end, 0.8 of each kernel.
    for layer in resumed.layers:
        size = layer.kernel.numpy().size
        assert int(np.sum(layer.kernel.numpy() == 0)) == size - round(size * 0.2)
    # Uninterrupted, the same fit prunes the same weights.
    reference = _model(3)
    reference.fit(x[:320], y[:320], batch_size=BATCH, epochs=6, verbose=0, shuffle=False, callbacks=[PruneDuringTraining(schedule)])
    for layer in reference.layers:
        np.testing.assert_array_equal(layer.kernel.numpy() == 0, resumed.get_layer(layer.name).kernel.numpy() == 0)


def test_bad_arguments_change_nothing(digits_flat):
    (x, y), _ = digits_flat
    with pytest.raises(TypeError, match="schedule must be a TFMOT PruningSchedule"):
        PruneDuringTraining(0.9)
    with pytest.raises(ValueError, match="criterion must be one of"):
        PruneDuringTraining(ConstantSparsity(0.5, 0), criterion="l1")
    with pytest.raises(ValueError, match="criterion='obd' needs data"):
        PruneDuringTraining(ConstantSparsity(0.5, 0), criterion="obd")
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="no prunable layer named 'ghost'"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[PruneDuringTraining(ConstantSparsity(0.5, 0), layers=["ghost"])])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert "train_step" not in model.__dict__
