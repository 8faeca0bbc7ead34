"""The engine's house rules, checked on its source: small modules, and imports that flow one way."""

from __future__ import annotations

import ast
import pathlib

ENGINE = pathlib.Path(__file__).resolve().parents[2] / "keras_hessian" / "hessian"
# The engine may use these parts of the package and nothing else (no callbacks, layers, quantize,
# export, CLI or data).
ALLOWED = ("keras_hessian.hessian", "keras_hessian._validation", "keras_hessian._compat", "keras_hessian._backend")


def engine_modules() -> list[pathlib.Path]:
    return sorted(ENGINE.rglob("*.py"))


def imported_names(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "keras_hessian":  # `from keras_hessian import _compat`
                names.update(f"keras_hessian.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def test_engine_imports_only_itself_and_the_shared_helpers():
    for path in engine_modules():
        for name in imported_names(path):
            if name.startswith("keras_hessian."):
                assert name.startswith(ALLOWED), f"{path.relative_to(ENGINE)} imports {name}"


def test_engine_modules_stay_small():
    for path in engine_modules():
        assert len(path.read_text().splitlines()) <= 400, path.relative_to(ENGINE)
