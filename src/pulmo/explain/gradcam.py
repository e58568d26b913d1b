"""Grad-CAM for any registry CNN (its ``cam_layer``), via the ``grad-cam`` library.

Frozen backbones carry no parameter gradients, so the input is made to require a gradient:
the activations of the hooked layer then do, and the library's gradient hooks fire.
"""

from __future__ import annotations


import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from pulmo.errors import ConfigError


def grad_cam(model: nn.Module, x: torch.Tensor, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM heatmap for one input.

    Args:
        model: a registry CNN with a ``cam_layer`` attribute.
        x: ``(1, C, H, W)`` model input.
        class_index: class to explain (default: the predicted class).
    Returns:
        ``(H, W)`` float32 map in ``[0, 1]``, the input's size.
    """
    layer = getattr(model, "cam_layer", None)
    if layer is None:
        raise ConfigError(f"{type(model).__name__} has no cam_layer: Grad-CAM needs a CNN from the registry")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one input of shape (1, C, H, W), got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    if class_index is None:
        with torch.no_grad():
            class_index = int(model(x).argmax(1))
    inp = x.detach().clone().requires_grad_(True)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        heat = cam(input_tensor=inp, targets=[ClassifierOutputTarget(class_index)])[0]
    model.train(was_training)
    return heat.astype(np.float32)


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Heatmap (jet colours) over the X-ray, by ``grad-cam``'s ``show_cam_on_image``: ``gray``
    ``(H, W)`` in [0, 1] and ``heat`` any size in [0, 1] -> ``(H, W, 3)`` uint8 RGB."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    h, w = gray.shape
    heat = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    base = np.repeat(np.clip(gray, 0, 1).astype(np.float32)[..., None], 3, axis=2)
    return show_cam_on_image(base, np.clip(heat, 0, 1), use_rgb=True, image_weight=1 - alpha)
