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


class _FakeTrainer:
    """The parts of a BaseTrainer that cpu_fast's `validate` touches; `validate` reports what the EMA model ran in."""

    def __init__(self, device: str = "cpu") -> None:
        from ultralytics.nn.tasks import DetectionModel
        from ultralytics.utils.torch_utils import ModelEMA

        torch.manual_seed(0)
        self.device = torch.device(device)
        self.model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
        self.ema = ModelEMA(self.model)

    def validate(self) -> tuple[bool, torch.Tensor]:
        ema = self.ema.ema.eval()
        self.layout_seen = _channels_last(ema)
        return "predict" in vars(ema), ema(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)))[0]


def _channels_last(model: torch.nn.Module) -> bool:
    """Whether the model's 3x3 convolution weights are channels_last (1x1 ones are both layouts at once)."""
    weights = [p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    return all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in weights)


@pytest.mark.parametrize(
    ("val_bf16", "device", "patched"),
    [
        (True, "cpu", True),  # the per-epoch validation's forward runs under bf16 autocast
        (False, "cpu", False),  # switched off alone (`--set val_bf16=false`): float32 as before
        (True, "meta", False),  # not on a CPU: Ultralytics' own autocast rules (fp16 on CUDA) stay in charge
    ],
)
def test_val_bf16_patches_the_ema_model_for_validation_only(val_bf16: bool, device: str, patched: bool) -> None:
    from fracturekit.training.trainers import cpu_fast

    trainer = cpu_fast(_FakeTrainer, bf16=False, channels_last=False, val_bf16=val_bf16)()
    trainer.device = torch.device(device)
    ran_patched, out = trainer.validate()
    assert ran_patched is patched
    assert out.dtype == torch.float32  # outputs back in float32 for the loss, NMS and metrics
    assert "predict" not in vars(trainer.ema.ema)  # gone again: last.pt/best.pt pickle the plain EMA model
    _, ref = _FakeTrainer.validate(trainer)
    assert torch.equal(out, ref) is not patched  # bf16 really changed the numbers where it was on


@pytest.mark.parametrize(
    ("channels_last", "device", "during"),
    [
        (True, "cpu", True),  # the per-epoch validation's forward runs channels_last, as the training does
        (False, "cpu", False),  # `--set channels_last=false`: contiguous throughout
        (True, "meta", False),  # not on a CPU: Ultralytics' own handling
    ],
)
def test_channels_last_validation_keeps_the_ema_contiguous(channels_last: bool, device: str, during: bool) -> None:
    from fracturekit.training.trainers import cpu_fast

    trainer = cpu_fast(_FakeTrainer, bf16=False, channels_last=channels_last, val_bf16=False)()
    trainer.device = torch.device(device)
    trainer.ema.update(trainer.model)  # Ultralytics' EMA keeps the tensors of its first update, and updates those
    before = [p.clone() for p in trainer.ema.ema.parameters()]
    trainer.validate()
    assert trainer.layout_seen is during
    params = list(trainer.ema.ema.parameters())
    assert all(p.is_contiguous() for p in params)  # as last.pt/best.pt pickle it
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))  # a layout change, same values
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)  # a training step moved the weights: the next update must reach the EMA model's own tensors
    trainer.ema.update(trainer.model)
    assert not torch.equal(next(trainer.ema.ema.parameters()), before[0])


@pytest.mark.parametrize(
    ("val_bf16", "bf16", "kind", "reproducible", "cpu_has_bf16", "expected"),
    [
        (None, True, "cpu", False, True, True),  # default: with bf16 training
        (None, False, "cpu", False, True, False),  # default with amp=false: float32 validation too
        (False, True, "cpu", False, True, False),  # off alone
        (True, False, "cpu", False, True, True),  # on alone (float32 training)
        (True, False, "cpu", False, False, False),  # ... never on a CPU without native bf16
        (True, False, "cpu", True, True, False),  # ... nor with --deterministic
        (True, False, "cuda", False, True, False),  # ... nor off the CPU
    ],
)
def test_val_bf16_choice(
    monkeypatch: pytest.MonkeyPatch,
    val_bf16: bool | None,
    bf16: bool,
    kind: str,
    reproducible: bool,
    cpu_has_bf16: bool,
    expected: bool,
) -> None:
    from types import SimpleNamespace

    from fracturekit.core import device
    from fracturekit.core.device import CpuInfo
    from fracturekit.train import _val_bf16
    from fracturekit.training.config import resolve_config

    flags = ("avx2", "avx512f", "avx512_bf16") if cpu_has_bf16 else ("avx2",)
    monkeypatch.setattr(device, "cpu_info", lambda: CpuInfo("test cpu", flags))
    cfg = resolve_config("detect", None, {"val_bf16": val_bf16, "reproducible": reproducible})
    assert _val_bf16(cfg, SimpleNamespace(kind=kind), bf16) is expected


def test_val_bf16_refuses_a_non_boolean() -> None:
    from fracturekit.core.errors import UserError
    from fracturekit.training.config import resolve_config

    with pytest.raises(UserError, match="val_bf16"):
        resolve_config("detect", None, {"val_bf16": "yes please"})
