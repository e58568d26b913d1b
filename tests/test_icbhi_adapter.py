from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from pulmo.data.adapters.icbhi import RecordingName, label_from_flags, load_icbhi, read_split_file
from pulmo.data.records import load_manifest, save_manifest
from pulmo.errors import DataError


def test_label_from_flags():
    assert [label_from_flags(c, w) for c, w in [(0, 0), (1, 0), (0, 1), (1, 1)]] == ["normal", "crackle", "wheeze", "both"]


def test_name_parsing():
    n = RecordingName.parse("226_1b1_Pl_sc_LittC2SE")
    assert (n.patient_id, n.location, n.mode, n.device) == ("226", "Pl", "sc", "LittC2SE")
    with pytest.raises(DataError, match="not an ICBHI name"):
        RecordingName.parse("foo_bar")


def test_index_reads_both_audio_forms_and_lists_missing(icbhi_dir):
    idx = load_icbhi(icbhi_dir)
    assert len(idx.records) == 5 * 4  # six recordings, the last without audio
    assert len(idx.missing) == 4 and {m.recording_id for m in idx.missing} == {"106_1b1_Ll_sc_LittC2SE"}
    whole = [r for r in idx.records if r.path.endswith("101_1b1_Al_sc_Meditron.wav")]
    per_cycle = [r for r in idx.records if "/cycles/" in r.path]
    assert len(whole) == 4 and len(per_cycle) == 8
    assert whole[1].start_s == pytest.approx(whole[0].end_s)
    assert all(r.end_s is None and r.start_s == 0 for r in per_cycle)
    assert sum(idx.annotation_counts["train"].values()) + sum(idx.annotation_counts["test"].values()) == 24
    assert any("no audio" in n for n in idx.notes)


def test_strict_mode_fails_on_missing_audio(icbhi_dir):
    with pytest.raises(DataError, match="strict: no audio for cycle 0 of 106_1b1_Ll_sc_LittC2SE"):
        load_icbhi(icbhi_dir, strict=True)


def test_split_file_name_quirk_is_repaired(icbhi_dir):
    # A recording named LittC2SE in the folder but Meditron in the split file, as in the official file.
    ann = icbhi_dir / "annotations"
    (ann / "101_1b1_Al_sc_Meditron.txt").rename(ann / "226_1b1_Pl_sc_LittC2SE.txt")
    (icbhi_dir / "audio" / "101_1b1_Al_sc_Meditron.wav").rename(icbhi_dir / "audio" / "226_1b1_Pl_sc_LittC2SE.wav")
    split = icbhi_dir / "ICBHI_challenge_train_test.txt"
    split.write_text(split.read_text().replace("101_1b1_Al_sc_Meditron", "226_1b1_Pl_sc_Meditron"))
    idx = load_icbhi(icbhi_dir)
    recs = [r for r in idx.records if r.recording_id == "226_1b1_Pl_sc_LittC2SE"]
    assert len(recs) == 4 and recs[0].split == "train" and recs[0].device == "LittC2SE"
    assert any("226_1b1_Pl_sc_Meditron" in n for n in idx.notes)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no ICBHI annotations folder"):
        load_icbhi(tmp_path / "nowhere")


def test_annotation_beyond_audio_end(icbhi_dir):
    ann = icbhi_dir / "annotations" / "101_1b1_Al_sc_Meditron.txt"
    ann.write_text(ann.read_text() + "30.0\t32.0\t0\t0\n")
    with pytest.raises(DataError, match="ends after the audio"):
        load_icbhi(icbhi_dir)


def test_corrupt_and_empty_audio(icbhi_dir):
    wav = icbhi_dir / "audio" / "101_1b1_Al_sc_Meditron.wav"
    wav.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(DataError, match="cannot read audio"):
        load_icbhi(icbhi_dir)
    sf.write(wav, np.zeros(0, np.float32), 4000)
    with pytest.raises(DataError, match="empty"):
        load_icbhi(icbhi_dir)


def test_malformed_annotation_line(icbhi_dir):
    (icbhi_dir / "annotations" / "101_1b1_Al_sc_Meditron.txt").write_text("0.0 oops 0 0\n")
    with pytest.raises(DataError, match="expected 'start end crackle wheeze'"):
        load_icbhi(icbhi_dir)


def test_manifest_round_trip(icbhi_dir, tmp_path):
    recs = load_icbhi(icbhi_dir).records
    save_manifest(recs, tmp_path / "m.jsonl")
    assert load_manifest(tmp_path / "m.jsonl") == recs


def test_real_annotation_counts_match_paper_table_1(real_icbhi):
    idx = load_icbhi(real_icbhi)
    assert idx.annotation_counts["train"] == Counter(normal=2063, crackle=1215, wheeze=501, both=363)
    assert idx.annotation_counts["test"] == Counter(normal=1579, crackle=649, wheeze=385, both=143)
    assert len(idx.records) + len(idx.missing) == 6898
    # Patients 156 and 218 have recordings on both sides of the official split.
    split, _ = read_split_file(real_icbhi)
    sides = {part: {rec.split("_")[0] for rec, p in split.items() if p == part} for part in ("train", "test")}
    assert sides["train"] & sides["test"] == {"156", "218"}
