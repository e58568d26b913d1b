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
