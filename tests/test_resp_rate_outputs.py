"""What the resp-rate benchmarks and ``pulmo evaluate --task resp-rate`` write for people to read."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_run_folders_are_named_relative_to_the_repository(tmp_path):
    from resp_rate import shown

    assert shown(ROOT / "runs" / "resp_rate" / "row" / "seed0") == Path("runs/resp_rate/row/seed0")
    assert shown(tmp_path) == tmp_path.resolve()  # outside the repository: kept whole


def test_short_clip_rules_offer_the_distribution_fit_only_to_networks_with_the_head():
    from resp_rate_short_cv import clip_rules

    from pulmo.resp_rate.config import ClipConfig

    clip = ClipConfig(refine_tolerance=0.3, three_halves_check=True, posterior_weight=1.0)
    plain = clip_rules(clip, has_bins=False)
    assert list(plain)[0] == "window rate" and len(plain) == 1 + sum(t > 0 for t in clip.refine_grid)
    assert all(c.posterior_weight is None and not c.three_halves_check for c in plain.values())
    assert plain["window rate"].refine_tolerance == 0.0
    with_bins = clip_rules(clip, has_bins=True)
    assert len(with_bins) == len(plain) + len(clip.posterior_grid)
    assert with_bins["distribution fit, weight 2"].posterior_weight == 2.0


def test_short_clip_predictions_follow_who_votes_as_choose_gate_returns_it():
    import numpy as np
    from resp_rate_composite import MIXED_VOTE
    from resp_rate_short import clip_predictions

    from pulmo.resp_rate.config import RespRateConfig
    from pulmo.resp_rate.evaluate import LabelledAudio
    from pulmo.resp_rate.net import build_net
    from pulmo.resp_rate.predictor import NetPredictor

    cfg = RespRateConfig.from_dict({"model": {"name": "rr_lstm", "params": {"variant": "lstm", "hidden": 8, "embed": 8}}})
    nets = [NetPredictor(build_net(cfg).eval(), cfg.clip) for _ in range(2)]
    rng = np.random.default_rng(0)
    clips = [LabelledAudio(f"c{i}", rng.standard_normal(2000 * 5).astype(np.float32), 12.0) for i in range(2)]
    for vote in ("composite", MIXED_VOTE):
        out = clip_predictions(clips, nets[:1], nets[1:], (vote, None, None))
        assert len(out["chosen"]) == len(out["breathing"]) == len(out["dsp"]) == 2
        assert all(np.isfinite(out["chosen"]))
