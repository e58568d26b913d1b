"""An exported network, run by onnxruntime, in the place of the PyTorch module it came from.

:func:`pulmo.export.use_runtime` puts an :class:`OnnxModule` where a pipeline keeps its network
(``pipe.net`` of lung sounds, ``pipe.model`` of the chest X-ray, ``pipe.detector.net`` of the
detector). onnxruntime gives no gradients, so where one is asked for (Grad-CAM of the chest
X-ray: an input that requires grad, with grad enabled) the PyTorch module answers instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class OnnxModule(nn.Module):
    """``path`` (an ONNX file with one input) as an ``nn.Module``: ``(B, ...)`` float32 tensor in,
    the graph's first output as a tensor out (logits of a classifier, ``(B, 4 + classes, anchors)``
    of the detector).

    Args:
        path: the exported network.
        torch_module: the PyTorch module it was exported from, kept for gradients (and its
            ``cam_layer`` for Grad-CAM); None where nothing needs them.
        threads: onnxruntime's intra-op threads (None: its default, every core).
    """

    def __init__(self, path: str | Path, torch_module: nn.Module | None = None, threads: int | None = None) -> None:
        super().__init__()
        from pulmo.export import OnnxClassifier

        self.runner = OnnxClassifier(path, threads)
        self.torch_module = torch_module

    @property
    def cam_layer(self) -> nn.Module | None:
        return getattr(self.torch_module, "cam_layer", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.torch_module is not None and torch.is_grad_enabled() and x.requires_grad:
            return self.torch_module(x)
        return self.runner(x)


__all__ = ["OnnxModule"]
