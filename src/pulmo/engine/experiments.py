"""Which engine trains an experiment file: the file's ``task:`` (default ``lung-sounds``)
picks its config loader and its Lightning training run, so ``pulmo train`` and ``pulmo
reproduce`` take any capability's experiment file with the same flags."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulmo.config import read_experiment
from pulmo.engine.launch import Launch
from pulmo.errors import ConfigError


@dataclass(frozen=True)
class TaskEngine:
    """``load(path, overrides) -> config``; ``run(config, out_dir, progress, launch) -> metrics``;
    ``summary(metrics) -> one line`` of validation and test figures."""

    load: Callable[..., Any]
    run: Callable[..., dict[str, Any]]
    summary: Callable[[dict[str, Any]], str]


def _lung_sounds() -> TaskEngine:
    from pulmo.config import load_config
    from pulmo.engine.train import run_experiment

    def summary(m: dict[str, Any]) -> str:
        t = m["test"]
        return (f"val score {m['val']['score']:.4f} | test Se {t['sensitivity']:.4f} Sp {t['specificity']:.4f} "
                f"score {t['score']:.4f}")

    return TaskEngine(load_config, run_experiment, summary)


def _resp_rate() -> TaskEngine:
    from pulmo.resp_rate.config import load_rr_config
    from pulmo.resp_rate.train import run_rr_experiment

    def summary(m: dict[str, Any]) -> str:
        v, t = m["val"], m["test"]
        return (f"val MAE {v['mae']:.2f} bpm, CCC {v['ccc']:.3f} | test MAE {t['mae']:.2f} bpm, CCC {t['ccc']:.3f} "
                f"(epoch {m['selected_epoch']})")

    return TaskEngine(load_rr_config, run_rr_experiment, summary)


def _cxr() -> TaskEngine:
    from pulmo.cxr.config import load_cxr_config
    from pulmo.cxr.experiment import run_cxr_experiment

    def summary(m: dict[str, Any]) -> str:
        v, t = m["val"], m["test"]
        return (f"val macro-F1 {v['macro_f1']:.3f} (n={v['n']}) | test accuracy {t['accuracy']:.3f}, "
                f"macro-F1 {t['macro_f1']:.3f} (n={t['n']}) (epoch {m['best_epoch']})")

    return TaskEngine(load_cxr_config, run_cxr_experiment, summary)


def _detect() -> TaskEngine:
    from pulmo.detect.config import load_detect_config
    from pulmo.detect.train import run_detect_experiment

    def summary(m: dict[str, Any]) -> str:
        v, t = m["val"], m["test"]
        return (f"val F1 {v['f1']:.3f} | test precision {t['precision']:.3f}, recall {t['recall']:.3f}, "
                f"F1 {t['f1']:.3f} (epoch {m['best_epoch']})")

    return TaskEngine(load_detect_config, run_detect_experiment, summary)


ENGINES: dict[str, Callable[[], TaskEngine]] = {"lung-sounds": _lung_sounds, "resp-rate": _resp_rate, "cxr": _cxr,
                                                "detect": _detect}
#: tasks whose engine runs on several processes (``--devices N --strategy ddp``)
DISTRIBUTED = ("lung-sounds", "resp-rate", "cxr", "detect")


def experiment_task(path: str | Path) -> str:
    """The ``task:`` of an experiment file (after its ``base:``), ``lung-sounds`` when absent."""
    return str(read_experiment(path).get("task", "lung-sounds"))


def engine_for(path: str | Path) -> TaskEngine:
    """The training engine of ``path``'s task.

    Raises:
        ConfigError: the task has no ``pulmo train`` engine.
    """
    task = experiment_task(path)
    if task not in ENGINES:
        raise ConfigError(f"{path}: task {task!r} does not train through 'pulmo train' yet "
                          f"(it does: {', '.join(ENGINES)})")
    return ENGINES[task]()


def train_experiment(path: str | Path, overrides: dict[str, Any], out: str | Path, progress: bool = True,
                     launch: Launch | None = None) -> tuple[Any, dict[str, Any], TaskEngine]:
    """Load ``path`` with ``overrides`` and train it into ``out``: ``(config, metrics, engine)``;
    ``metrics`` is ``{}`` on the further processes of a distributed run."""
    engine = engine_for(path)
    cfg = engine.load(path, overrides)
    return cfg, engine.run(cfg, out, progress=progress, launch=launch), engine


__all__ = ["DISTRIBUTED", "ENGINES", "TaskEngine", "engine_for", "experiment_task", "train_experiment"]
