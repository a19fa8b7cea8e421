"""EigenCAM heatmaps for YOLO classifiers and detectors: where in the film the model looked.

EigenCAM (Muhammad & Yeasin 2020) projects the feature maps entering the model's head onto their
first principal component: gradient-free, so it comes out of the same forward pass that makes the
prediction, and works for the classifier and the detector alike. Hand-written with a torch forward
pre-hook because no maintained CAM package is among our dependencies; Ultralytics' own
`class_activation_map` (LayerCAM behind `predict(visualize=True)`) needs one backward pass per
explained box and writes overlays of the letterboxed input under its own file names, whereas we
map the heatmap back onto the original film.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def eigen_map(acts: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) activations -> (B, h, w) EigenCAM maps scaled to 0..1 per image.

    The sign of a principal component is arbitrary; it is chosen so the map correlates positively
    with the mean activation (the usual convention), then negatives are clipped.
    """
    b, c, h, w = acts.shape
    a = acts.float().reshape(b, c, h * w).transpose(1, 2)  # (B, hw, C)
    a = a - a.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    proj = a @ vh[:, 0, :, None]  # (B, hw, 1): projection on the first component
    mean_act = acts.float().reshape(b, c, h * w).mean(1)  # (B, hw)
    sign = torch.sign((proj[..., 0] * mean_act).sum(1, keepdim=True))
    sign[sign == 0] = 1
    cam = (proj[..., 0] * sign).clamp(min=0).reshape(b, h, w)
    return cam / cam.amax((1, 2), keepdim=True).clamp(min=1e-7)


def eigencam(net: torch.nn.Module, x: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Run a YOLO model on a float32 (B, 3, H, W) batch; return its output and (B, H, W) heatmaps in 0..1.

    The feature maps are those entering the head (the last backbone stage for a classifier; the
    P3/P4/P5 levels for a detector). Each level gets its own map, upsampled to the input size, and
    the levels are combined by their element-wise maximum so a small-object level is not drowned out.
    """
    acts: list[torch.Tensor] = []

    def grab(module: torch.nn.Module, inputs: tuple[object, ...]) -> None:
        feats = inputs[0]
        acts.extend(t for t in (feats if isinstance(feats, (list, tuple)) else [feats]) if t.ndim == 4)

    head = net.model[-1]  # type: ignore[index]
    handle = head.register_forward_pre_hook(grab)
    try:
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(device, next(net.parameters()).dtype)  # fp16 nets on CUDA
            y = net(xt)
            size = xt.shape[2:]
            levels = [F.interpolate(eigen_map(a)[:, None], size, mode="bilinear", align_corners=False) for a in acts]
    finally:
        handle.remove()
    cam = torch.stack(levels).amax(0)[:, 0]
    out = y[0] if isinstance(y, (list, tuple)) else y
    return out.float().cpu().numpy(), cam.cpu().numpy()
