"""Checks on the shared chest X-ray data; skipped where it is absent."""

import csv

import pytest

from pulmo.config import default_data_root
from pulmo.cxr.duplicates import find_duplicates, leaked
from pulmo.data.adapters.image_folder import load_record_image, read_image_folder


@pytest.fixture(scope="module")
def covid3():
    root = default_data_root() / "cxr" / "covid19_3class"
    if not (root / "train").is_dir():
        pytest.skip(f"covid19_3class not found at {root}")
    return root


def test_hash_finder_recovers_the_manifests_train_to_val_leaks(covid3):
    recs = read_image_folder(covid3)
    assert len(recs) == 317 and {r.split for r in recs} == {"train", "val"}
    pairs = find_duplicates([r.record_id for r in recs], lambda i: load_record_image(recs[i]))
    found = leaked(pairs, {r.record_id: r.split for r in recs})
    with (covid3.parent / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    flagged = {r["path"].split("covid19_3class/", 1)[1] for r in rows
               if r["split"] == "val" and "covid19_3class/train/" in r["flags"]}
    assert len(flagged) == 8 and found == flagged
