"""No backend is named outside fracturekit/infer/backends/: a new backend must stay one new file there.

A backend identifier is a backend's name, one of its `--backend` variants, its export format or module, or
the runtime packages the backends import (onnxruntime, openvino, tensorrt). Outside the backends package,
such a string (a branch like `m.backend == "openvino"`) or an import of a runtime package fails this test.
Docstrings and comments are prose, not code, and are not read; nor are docs and README.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fracturekit
from fracturekit.infer.backends import BACKEND_MAP, VARIANTS

PACKAGE = Path(fracturekit.__file__).parent
BACKENDS_DIR = PACKAGE / "infer" / "backends"
RUNTIMES = {"onnxruntime", "openvino", "tensorrt"}  # the packages backends run on (tensorrt: through onnxruntime)
# Whole files allowed to name backends, and why.
ALLOWED_FILES = {
    "export.py",  # the export writers: each format's own Ultralytics options, ONNX int8 quantization, NNCF
}
# (file, identifier) pairs allowed outside the backends package, and why. Keep it this small.
ALLOWED = {
    ("evaluate.py", "torch"),  # the torch package's version in metrics.json, not the backend
    ("train.py", "torch"),  # the torch package's version in run.json, not the backend
}


def identifiers() -> set[str]:
    names = set(BACKEND_MAP) | set(VARIANTS) | RUNTIMES
    for b in BACKEND_MAP.values():
        names |= {n for n in (b.export_format, b.export_module) if n}
    return {n.lower() for n in names}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def named_backends(source: str, names: set[str]) -> list[str]:
    """Backend identifiers `source` uses as code: string constants equal to one, imports of a runtime."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value.strip().lower() in names or "executionprovider" in node.value.lower():
                hits.append(node.value)
        elif isinstance(node, ast.Import):
            hits += [a.name for a in node.names if a.name.split(".")[0] in RUNTIMES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in RUNTIMES:
            hits.append(str(node.module))
    return hits


@pytest.mark.parametrize(
    ("source", "want"),
    [
        ('if m.backend == "openvino":\n    pass', ["openvino"]),  # a branch on a backend name
        ('load_model(run, "detect", backend="onnx-int8")', ["onnx-int8"]),  # a variant name
        ("import onnxruntime as ort", ["onnxruntime"]),  # a runtime package
        ("from openvino import Core", ["openvino"]),  # the same, from-import
        ('providers = ["CUDAExecutionProvider"]', ["CUDAExecutionProvider"]),  # an onnxruntime provider
        ('"""Runs on ONNX Runtime or OpenVINO."""\nx = 1', []),  # a docstring is prose
        ('help = "Detector weights (.pt, .onnx, OpenVINO folder)."', []),  # prose in a help text, not an identifier
        ("import torch", []),  # torch the package is used everywhere; only the string "torch" names the backend
    ],
)
def test_scanner(source: str, want: list[str]) -> None:
    assert named_backends(source, identifiers()) == want


def test_no_backend_named_outside_backends() -> None:
    names = identifiers()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.is_relative_to(BACKENDS_DIR) or rel in ALLOWED_FILES:
            continue
        found += [f"{rel}: {hit!r}" for hit in named_backends(path.read_text(), names) if (rel, hit) not in ALLOWED]
    assert not found, "backend named outside fracturekit/infer/backends/ (add a Backend attribute instead):\n" + (
        "\n".join(found)
    )
