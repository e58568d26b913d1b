"""A short real-data check, run where the shared ICBHI copy exists (skipped elsewhere)."""

from pulmo.engine.checkpoint import read_checkpoint
from pulmo.inference.bundled import default_checkpoint
from pulmo.inference.lung_sounds import LungSoundPipeline, evaluate_icbhi


def test_bundled_model_reprints_its_official_test_numbers(real_icbhi):
    ckpt = default_checkpoint("lung-sounds")
    stored = read_checkpoint(ckpt)["metrics"]["test"]
    report = evaluate_icbhi(LungSoundPipeline.from_checkpoint(ckpt), real_icbhi, "test", progress=False)
    assert report["n"] == stored["n"] == 1071
    for key in ("sensitivity", "specificity", "score"):
        assert abs(report[key] - stored[key]) < 1e-9, key
