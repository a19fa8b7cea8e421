"""The public API: `fracturekit.prepare/audit/train/evaluate/predict/export/cv` from the top of the package.

Each name is the stage module made callable (fracturekit.Stage); these tests pin that calling it runs the
stage's function, that every way of reaching the module still gets the module, that `import fracturekit` stays
cheap, and that README's "From Python" example runs as written.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fracturekit as fk
from fracturekit.audit import AuditResult
from fracturekit.core.errors import UserError

README = Path(__file__).resolve().parents[1] / "README.md"
HEAVY = ("torch", "ultralytics", "cv2", "pandas", "sklearn", "fracturekit.prepare", "fracturekit.predict")


@pytest.mark.parametrize("name", list(fk.STAGES))
def test_stage_is_its_module_and_calls_its_function(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(f"fracturekit.{name}")
    function = getattr(module, fk.STAGES[name])
    assert getattr(fk, name) is module  # `fk.predict` and `import fracturekit.predict` are one object
    assert inspect.signature(getattr(fk, name)) == inspect.signature(function)
    assert function.__doc__ and "return" in function.__doc__.lower()  # each says what it returns
    # The function is looked up at call time, so a monkeypatched one (by string path, as tests do) runs.
    monkeypatch.setattr(f"fracturekit.{name}.{fk.STAGES[name]}", lambda *a, **k: ("called", a, k))
    assert getattr(fk, name)(1, x=2) == ("called", (1,), {"x": 2})


def test_import_forms_keep_the_module() -> None:
    # The forms tests and users write; a function bound on the package would break the last three.
    import fracturekit.predict as by_path
    from fracturekit import evaluate as by_from

    assert hasattr(by_path, "list_sources") and hasattr(by_from, "_load_model")
    assert sys.modules["fracturekit.cv"] is fk.cv and callable(fk.cv)


def test_import_is_cheap_and_stages_load_on_first_use() -> None:
    code = (
        f"import sys, fracturekit as fk; heavy = {HEAVY!r}; print(sorted(m for m in heavy if m in sys.modules)); "
        "fk.audit; print('fracturekit.audit' in sys.modules, callable(fk.audit))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True True"], out


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'predicts'"):
        fk.predicts  # noqa: B018


def test_audit_from_the_top(phantom_coco: Path, tmp_path: Path) -> None:
    result = fk.audit(phantom_coco, tmp_path / "audit")
    assert isinstance(result, AuditResult) and (tmp_path / "audit" / "audit.json").is_file()
    with pytest.raises(UserError, match="no such file or folder"):
        fk.audit(tmp_path / "missing")


def test_readme_from_python_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The code block under "## From Python", verbatim, in an empty folder (about 40 s on 2 busy cores)."""
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    # Ultralytics logs training on stdout too: pick the example's own lines by their shape.
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("{'train': {") for line in printed) == 1  # the per-split counts
    (scores,) = [m for line in printed if (m := re.fullmatch(r"(\S+) (\S+) (/\S+)", line))]
    assert 0 <= float(scores[1]) <= 1 and 0 <= float(scores[2]) <= 1  # AUROC, mAP@0.5:0.95
    assert Path(scores[3]) == (tmp_path / "runs" / "classify" / "cls" / "eval").resolve()  # the default eval/
    assert (Path(scores[3]) / "metrics.json").is_file()
    films = [m for line in printed if (m := re.fullmatch(r"(\S+\.png) ([\d.]+) (\S+) (\d+)", line))]
    assert len(films) == 4 and all(0 <= float(f[2]) <= 1 for f in films)  # one line per fresh film
    assert (tmp_path / "runs" / "predict-fresh" / "predictions.csv").is_file()
