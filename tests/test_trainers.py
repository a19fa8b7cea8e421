"""fracturekit.training.trainers.cpu_fast: bf16 autocast and channels_last for CPU training, float32 everywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fracturekit.core.yolo_env import load_ultralytics

load_ultralytics()


def test_bf16_predict_runs_the_network_in_bf16_and_returns_float32() -> None:
    import types

    from ultralytics.nn.tasks import DetectionModel

    from fracturekit.training.trainers import _bf16_predict

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False).eval()
    x = torch.rand(1, 3, 64, 64)
    ref = model(x)[0]
    model.predict = types.MethodType(_bf16_predict, model)
    out = model(x)[0]
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert not torch.equal(out, ref)  # it really ran in bf16 ...
    torch.testing.assert_close(out, ref, atol=0.5, rtol=0.05)  # ... to bf16's ~3 significant digits


def test_cpu_fast_off_is_the_trainer_itself() -> None:
    from ultralytics.models.yolo.detect import DetectionTrainer

    from fracturekit.training.trainers import cpu_fast

    assert cpu_fast(DetectionTrainer, bf16=False, channels_last=False) is DetectionTrainer
    assert cpu_fast(DetectionTrainer, bf16=True, channels_last=False).__mro__[1] is DetectionTrainer


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_training_records_cpu_levers_and_saves_float_weights(tiny_runs: dict[str, Path], task: str) -> None:
    from fracturekit.core.device import cpu_info

    record = json.loads((tiny_runs[task] / "run.json").read_text())
    bf16 = cpu_info().bf16  # amp is on by default: bf16 exactly where the CPU has it, channels_last with it
    assert record["pipeline"]["cpu_bf16_autocast"] is bf16
    assert record["pipeline"]["cpu_channels_last"] is bf16
    ckpt = torch.load(tiny_runs[task] / "weights" / "best.pt", weights_only=False)
    params = list(ckpt["model"].parameters())
    assert all(p.dtype == torch.float16 for p in params)  # Ultralytics' usual half checkpoint, never bf16
    assert all(p.is_contiguous() for p in params)  # and NCHW, whatever the training layout
