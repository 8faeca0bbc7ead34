"""The command itself: help, --version, `python -m keras_hessian`, lazy imports, quiet TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import keras_hessian
from keras_hessian.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = ROOT + os.pathsep + environment.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=environment, timeout=300, check=False
    )


def test_no_arguments_prints_the_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: keras-hessian") and "spectrum" in out and "export" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-hessian {keras_hessian.__version__}"


def test_help_and_argument_errors_import_no_tensorflow():
    # Bug 14: building the parsers imported TensorFlow and the callbacks (7.5 s for --help).
    script = (
        "import sys\n"
        "import keras_hessian.cli as cli\n"
        "build = getattr(cli, 'build_parser', None) or cli._build_parser\n"
        "build()\n"
        "try:\n"
        "    build().parse_args(['train', '--method', 'nope'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    result = _python("-c", script)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout


def test_python_dash_m_help_and_version():
    result = _python("-m", "keras_hessian", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: keras-hessian")
    result = _python("-m", "keras_hessian", "--version")
    assert result.stdout.strip() == f"keras-hessian {keras_hessian.__version__}"


def test_spectrum_prints_no_tensorflow_start_up_log(tmp_path, linear_keras, digits_npz):
    # Bug 10: oneDNN / CUDA stub / cpu_feature_guard lines came before anything of ours.
    _, path = linear_keras
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    argv = ["-m", "keras_hessian", "spectrum", str(path), "--data", str(digits_npz), "--samples", "20", "--top-k", "1"]
    result = _python(*argv, env=env)
    assert result.returncode == 0, result.stderr
    assert "lambda_1" in result.stdout
    for noise in ("oneDNN", "cuda", "I0000", "cpu_feature_guard", "absl::InitializeLog"):
        assert noise not in result.stderr, result.stderr


def test_package_names_are_lazy_and_complete():
    for name in keras_hessian.__all__:
        assert getattr(keras_hessian, name) is not None
        assert name in dir(keras_hessian)
    from keras_hessian import HessianOperator, to_tflite  # noqa: F401

    with pytest.raises(AttributeError):
        keras_hessian.no_such_name  # noqa: B018


def test_choices_spelled_out_for_the_parser_match_the_library():
    from keras_hessian import export, hawq, pruning
    from keras_hessian.callbacks import LR_SCALING_RULES, METHODS, SCHEDULES
    from keras_hessian.cli import export as export_command
    from keras_hessian.cli import prune, quantize, train

    assert train.METHODS == tuple(METHODS)
    assert train.LR_SCALING_RULES == tuple(LR_SCALING_RULES)
    assert export_command.MODES == tuple(export.MODES)
    assert set(quantize.CANDIDATES) == set(hawq.CANDIDATES) and quantize.METRICS == hawq.METRICS
    assert quantize.DEFAULT_CANDIDATES == ",".join(hawq.DEFAULT_CANDIDATES)
    assert prune.CRITERIA == tuple(pruning.CRITERIA) and prune.GRANULARITIES == tuple(pruning.GRANULARITIES)
    assert prune.ALLOCATIONS == tuple(pruning.ALLOCATIONS) and prune.SCHEDULES == tuple(SCHEDULES)
