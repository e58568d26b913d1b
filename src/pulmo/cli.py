"""The ``pulmo`` command line: a thin layer over library functions.

Errors caused by input (``PulmoError``) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pulmo.errors import ConfigError, PulmoError


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["train.seed=2", "loss.name=ce"]`` -> nested override dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run each experiment file for each seed; a run folder with metrics.json is skipped."""
    from pulmo.config import load_config
    from pulmo.engine.train import run_experiment

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = _parse_set(args.set or [])
    for path in args.configs:
        for seed in args.seeds:
            cfg = load_config(path, {**overrides, "train": {**overrides.get("train", {}), "seed": seed}})
            run_dir = Path(args.out) / cfg.name / f"seed{seed}"
            if (run_dir / "metrics.json").exists() and not args.force:
                print(f"skip {run_dir} (done; --force to redo)")
                continue
            metrics = run_experiment(cfg, run_dir, progress=not args.quiet)
            print(
                f"{cfg.name} seed {seed}: val score {metrics['val']['score']:.4f} | test Se "
                f"{metrics['test']['sensitivity']:.4f} Sp {metrics['test']['specificity']:.4f} "
                f"score {metrics['test']['score']:.4f} | {metrics['train_seconds']:.0f} s -> {run_dir}"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulmo", description="AI-assisted respiratory screening toolkit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="train and score experiment files (one per reported number)")
    p.add_argument("configs", nargs="+", help="experiment YAML files, e.g. configs/experiments/attentive-resnet/*.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="runs", help="run folders go to OUT/<experiment>/seed<k>/")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.max_epochs=2")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: library default)")
    p.add_argument("--force", action="store_true", help="re-run finished runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PulmoError as err:
        print(f"pulmo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
