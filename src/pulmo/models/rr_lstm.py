"""Multi-task (TC-)LSTM for respiratory rate (Kumar et al., section IV-B, Fig. 5).

Input ``(B, 1, F, T)`` mel filterbank energies. ``variant="tc_lstm"`` first convolves
over time (kernel 3, as many filters as feature bands, ReLU). A single-layer LSTM runs
over the frames; its outputs are averaged over time (clips of any length give one
vector). A shared breath embedding feeds the rate/count regression and the
none/normal/heavy breathing classes; the noise head has its own embedding a quarter of
that size. With ``rate_bins`` > 0 the breath embedding also feeds a softmax over log-spaced
rate bins (:mod:`pulmo.losses.rate_bins`), which can keep two octaves apart where the
regression averages them.
"""

from __future__ import annotations

import torch
from torch import nn

from pulmo.losses.rate_bins import rate_bin_centres
from pulmo.models import MODELS


class RRLSTM(nn.Module):
    """Returns a dict: ``rate`` (B,) and ``count`` (B,) in the targets' scaled units,
    ``breath_logits`` (B, 3), ``noise_logits`` (B, 2), and with ``rate_bins`` also
    ``rate_bin_logits`` (B, rate_bins) over the bin centres ``rate_bin_bpm`` (rate_bins,).

    Args:
        n_mels: feature bands ``F``. hidden: LSTM units (paper: 16/32/64). embed: breath
        embedding size (noise embedding: ``max(embed // 4, 1)``). variant: ``lstm`` or
        ``tc_lstm``. num_classes: breathing classes (3). in_chans: must be 1.
        rate_bins: rate bins of the distribution head (0: none). rate_bin_range_bpm: the
        first and last bin centre (bpm).
    """

    def __init__(self, n_mels: int = 40, hidden: int = 32, embed: int = 32, variant: str = "lstm",
                 num_classes: int = 3, in_chans: int = 1, dropout: float = 0.1, rate_bins: int = 0,
                 rate_bin_range_bpm: tuple[float, float] = (3.0, 60.0)) -> None:
        super().__init__()
        if variant not in ("lstm", "tc_lstm"):
            raise ValueError(f"variant must be 'lstm' or 'tc_lstm', got {variant!r}")
        if in_chans != 1:
            raise ValueError("rr_lstm takes one feature channel")
        self.variant, self.num_classes, self.n_mels = variant, num_classes, n_mels
        self.time_conv = nn.Sequential(nn.Conv1d(n_mels, n_mels, 3, padding=1), nn.ReLU()) if variant == "tc_lstm" else None
        self.lstm = nn.LSTM(n_mels, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.breath_embed = nn.Sequential(nn.Linear(hidden, embed), nn.ReLU())
        self.regress = nn.Linear(embed, 2)
        self.breath_head = nn.Linear(embed, num_classes)
        noise_dim = max(embed // 4, 1)
        self.noise_embed = nn.Sequential(nn.Linear(hidden, noise_dim), nn.ReLU())
        self.noise_head = nn.Linear(noise_dim, 2)
        self.rate_bin_head = nn.Linear(embed, rate_bins) if rate_bins else None
        if rate_bins:  # derived from the arguments, so not saved with the weights
            self.register_buffer("rate_bin_bpm", rate_bin_centres(rate_bins, *rate_bin_range_bpm), persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != self.n_mels:
            raise ValueError(f"expected (B, 1, {self.n_mels}, T) features, got {tuple(x.shape)}")
        seq = x[:, 0]  # (B, F, T)
        if self.time_conv is not None:
            seq = self.time_conv(seq)
        out, _ = self.lstm(seq.transpose(1, 2))  # (B, T, H)
        h = self.drop(out.mean(dim=1))
        e = self.breath_embed(h)
        reg = self.regress(e)
        out = {"rate": reg[:, 0], "count": reg[:, 1], "breath_logits": self.breath_head(e),
               "noise_logits": self.noise_head(self.noise_embed(h))}
        if self.rate_bin_head is not None:
            out["rate_bin_logits"] = self.rate_bin_head(e)
        return out


@MODELS.register("rr_lstm")
def rr_lstm(**kwargs: object) -> RRLSTM:
    """``create_model("rr_lstm", variant="tc_lstm", hidden=32)``."""
    return RRLSTM(**kwargs)  # type: ignore[arg-type]
