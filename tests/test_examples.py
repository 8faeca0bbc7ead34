"""Every examples/*.py runs as is, in its small mode, in-process (runpy: no TensorFlow import per script).

The list is the folder's content, so a new example is tested without a change here; examples
that need several processes (multiworker_absa.py, tested with the distributed tests) are left out.
"""

from __future__ import annotations

import pathlib
import runpy

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
ELSEWHERE = {"multiworker_absa.py"}  # several worker processes: tests/distributed runs it
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in ELSEWHERE)
EXPECTED = {  # what each script writes in the current directory
    "spectrum_of_my_model.py": ["density.png"],
    "hawq_plan.py": ["hawq.tflite", "plan.json", "sensitivity.png"],
    "prune_and_quantize.py": ["pruned.tflite", "pruned_int8.tflite"],
    "export_tflite.py": [f"model_{m}.tflite" for m in ("dynamic_int8", "float16", "float32", "int8")],
}


def test_the_user_stories_are_all_there():
    assert set(SCRIPTS) >= {"spectrum_of_my_model.py", "absa_fit.py", "swap_in_quantized_layers.py",
                            "hawq_plan.py", "prune_and_quantize.py", "export_tflite.py"}
    for name in SCRIPTS:
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""') and "--quick" in text and "KERAS_HESSIAN_EXAMPLE_QUICK" in text, name


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_in_its_small_mode(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HESSIAN_EXAMPLE_QUICK", "1")
    monkeypatch.setattr("sys.argv", [str(EXAMPLES / name)])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert capsys.readouterr().out.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EXPECTED.get(name, []))
