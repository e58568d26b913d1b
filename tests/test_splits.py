from pulmo.data.records import AudioRecord
from pulmo.data.splits import official_split, patient_disjoint_split


def make_records(n_patients=30, per_patient=10):
    labels = ["normal", "crackle", "wheeze", "both"]
    return [
        AudioRecord(record_id=f"{p}_{i}", path="x.wav", label=labels[(p + i) % 4 if p % 3 else 0],
                    patient_id=str(p), split="train" if p < 25 else "test")
        for p in range(n_patients) for i in range(per_patient)
    ]


def test_official_split():
    recs = make_records()
    assert len(official_split(recs, "train")) == 250 and len(official_split(recs, "test")) == 50


def test_patient_disjoint_split_is_disjoint_sized_and_seeded():
    recs = official_split(make_records(), "train")
    train, val = patient_disjoint_split(recs, 0.3, seed=0)
    assert not {r.patient_id for r in train} & {r.patient_id for r in val}
    assert len(train) + len(val) == len(recs)
    assert abs(len(val) / len(recs) - 0.3) <= 0.05
    again = patient_disjoint_split(recs, 0.3, seed=0)
    assert [r.record_id for r in again[1]] == [r.record_id for r in val]
    other = patient_disjoint_split(recs, 0.3, seed=1)
    assert {r.patient_id for r in other[1]} != {r.patient_id for r in val}


def test_a_device_with_two_patients_lands_on_both_sides():
    recs = [
        AudioRecord(record_id=f"{p}_{i}", path="x.wav", label=["normal", "crackle"][i % 2], patient_id=str(p),
                    device="rare" if p < 2 else "common", split="train")
        for p in range(30) for i in range(10)
    ]
    for seed in range(3):
        train, val = patient_disjoint_split(recs, 0.3, seed=seed)
        assert {r.device for r in train} == {r.device for r in val} == {"rare", "common"}
