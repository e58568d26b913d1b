"""Class remapping tables."""

from __future__ import annotations

import pytest

from pulmo.data.boxes import BoxRecord
from pulmo.data.remap import (
    BODY_SCAN_CLASSES,
    DROP,
    apply_mapping,
    build_mapping,
    load_mapping_file,
    mapped_classes,
    score_map,
    size_map,
)
from pulmo.errors import ConfigError


def rec(boxes, labels):
    return BoxRecord("r", "r.png", 1000, 1000, tuple(boxes), tuple(labels))


def test_tables_cover_the_18_classes():
    recs = [rec([(0, 0, 10, 10)] * 18, BODY_SCAN_CLASSES)]
    assert len(BODY_SCAN_CLASSES) == 18
    assert mapped_classes(build_mapping("agnostic", recs)) == ["anomaly"]
    binary = build_mapping("binary", recs)
    assert binary["pants button"] == "clothing" and binary["drugs"] == "anomaly" and binary["surgical implant"] == "anomaly"
    assert mapped_classes(binary) == ["anomaly", "clothing"]
    assert build_mapping("original", recs) == {c: c for c in BODY_SCAN_CLASSES}
    # agnostic and binary also cover classes never seen in training
    unseen = rec([(0, 0, 1, 1)], ["handgun"])
    assert apply_mapping([unseen], build_mapping("agnostic", recs))[0].labels == ("anomaly",)
    assert apply_mapping([unseen], build_mapping("binary", recs))[0].labels == ("anomaly",)
    with pytest.raises(ConfigError, match="handgun"):
        apply_mapping([unseen], build_mapping("original", recs))


def test_score_bands_follow_the_paper():
    m = score_map({"w": 0.9, "x": 0.75, "y": 0.3, "z": 0.25})
    assert m == {"w": "best", "x": "high", "y": "medium", "z": "low"}
    with pytest.raises(ConfigError):
        build_mapping("score", [rec([(0, 0, 1, 1)], ["a"])])


def test_size_bands():
    sizes = {"a": 4, "b": 10, "c": 20, "d": 40, "e": 80}
    recs = [rec([(0, 0, s, s)], [c]) for c, s in sizes.items()]
    m = size_map(recs)
    # quartiles of 4, 10, 20, 40, 80 are 10, 20, 40
    assert m == {"a": "tiny", "b": "tiny", "c": "small", "d": "medium", "e": "large"}


def test_apply_mapping_and_drop():
    r = rec([(0, 0, 1, 1), (2, 2, 3, 3)], ["zipper", "drugs"])
    out = apply_mapping([r], {"zipper": DROP, "drugs": "contraband"})[0]
    assert out.labels == ("contraband",) and out.boxes_xyxy == ((2, 2, 3, 3),)
    with pytest.raises(ConfigError, match="no entry"):
        apply_mapping([r], {"zipper": "x"})


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "Gun: weapon\nKnife: weapon\nWrench: tool\n"),
    (".json", '{"Gun": "weapon", "Knife": "weapon", "Wrench": "tool"}'),
    (".csv", "# original,new\nGun,weapon\nKnife,weapon\nWrench,tool\n"),
])
def test_user_mapping_files(tmp_path, suffix, text):
    path = tmp_path / f"map{suffix}"
    path.write_text(text)
    assert load_mapping_file(path) == {"Gun": "weapon", "Knife": "weapon", "Wrench": "tool"}
    assert build_mapping(str(path), []) == {"Gun": "weapon", "Knife": "weapon", "Wrench": "tool"}


def test_bad_mapping_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Gun\n")
    with pytest.raises(ConfigError, match="bad.csv:1"):
        load_mapping_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_mapping_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown remap"):
        build_mapping("sizes", [])
