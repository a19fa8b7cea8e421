"""fracturekit: bone-fracture X-ray AI from messy datasets to verified numbers and annotated predictions.

The pipeline from Python, one call per CLI command, each with the CLI's options as keyword arguments::

    import fracturekit as fk

    ds = fk.prepare("raw/", "datasets/mine")                 # PrepareResult: .dataset, .summary, .audit
    fk.audit("datasets/mine")                                # AuditResult: clusters, leaks
    clf = fk.train("classify", "datasets/mine", epochs=50)   # RunDir: .root, .best
    metrics = fk.evaluate("datasets/mine", classifier=clf.root)   # metrics.json as a dict
    rows = fk.predict("new_films/", classifier=clf.root)     # one record per film
    onnx = fk.export(clf.root, "onnx")                       # Path of the exported model
    cv = fk.cv("classify", "datasets/mine", folds=5)         # cv.json as a dict

Each name is the stage's module made callable (see `Stage`): `fk.predict(...)` runs
`fracturekit.predict.predict(...)`, while `import fracturekit.predict as m` and `m.list_sources` keep working.
Nothing heavy is imported until a stage is first used: `import fracturekit` loads no torch or Ultralytics.
The functions return; they print nothing (notes go to the `fracturekit` logger).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs ~2.5 ms of `import fracturekit`
if TYPE_CHECKING:
    import inspect
    from typing import Any

__version__ = "0.1.0"

# Public name -> the function of the same-named stage module that calling it runs.
STAGES = {
    "prepare": "prepare",
    "audit": "audit",
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "export": "export",
    "cv": "cross_validate",
}
__all__ = [*STAGES, "Stage", "__version__", "shipped_dir"]


class Stage(types.ModuleType):
    """A pipeline-stage module that can be called: `fracturekit.predict(...)` is `fracturekit.predict.predict(...)`.

    Why a callable module rather than a function bound on the package: importlib sets the package attribute
    `predict` to the submodule whenever `fracturekit.predict` is first imported, so a bound function is replaced
    by the module as soon as anything imports it; and a package attribute that stays a function (by guarding
    the package's setattr) breaks `import fracturekit.predict as m`, `from fracturekit import evaluate as E` and
    `monkeypatch.setattr("fracturekit.predict.x", ...)`, which all resolve through that attribute. A callable
    module keeps every one of those working (tests/test_api.py checks each form).
    """

    @property
    def _function(self) -> Any:
        # Looked up at each call, so a monkeypatched `fracturekit.predict.predict` is the one that runs.
        return getattr(self, STAGES[self.__name__.rpartition(".")[2]])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        """`inspect.signature(fk.predict)` and notebooks' `?` show the function's parameters."""
        import inspect  # here, not at the top: it costs ~10 ms of `import fracturekit`

        return inspect.signature(self._function)


def callable_stage(name: str) -> None:
    """Make the stage module `name` callable; each stage module calls this on itself as its last line."""
    sys.modules[name].__class__ = Stage


def __getattr__(name: str) -> types.ModuleType:
    """Import a stage on first use (`fk.train`), so `import fracturekit` stays cheap."""
    if name in STAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(STAGES))


def shipped_dir(packaged: str, checkout: str) -> Path:
    """A folder of YAMLs that ships with fracturekit: the wheel's `fracturekit/<packaged>/` (pyproject
    maps it there), else `<checkout>/` at the top of a source checkout or editable install."""
    here = Path(__file__).resolve().parent
    return here / packaged if (here / packaged).is_dir() else here.parent / checkout
