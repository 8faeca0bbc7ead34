"""Output paths: refused before any work, and written atomically."""

from __future__ import annotations

import pytest

from keras_hessian.export import (
    to_tflite,
)


def test_unwritable_paths_are_refused(float_model, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        to_tflite(float_model, tmp_path / "missing" / "m.tflite")
    with pytest.raises(ValueError, match="directory"):
        to_tflite(float_model, tmp_path)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="path"):
        to_tflite(float_model, a_file / "m.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_written_file_replaces_an_older_one_completely(float_model, tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"x" * 10_000_000)
    to_tflite(float_model, target, mode="float32")
    content = target.read_bytes()
    assert content[4:8] == b"TFL3" and len(content) < 1_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]
