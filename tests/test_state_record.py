"""The record of Tune's state: a resume trusts only the contents this driver saw its own sweep write."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lead_ray.runtime.state_record import KEEP, StateRecord, state_digests
from lead_ray.runtime.storage import RunStorage


def test_a_planted_or_changed_file_is_unknown_and_a_recorded_one_is_not(tmp_path: Path) -> None:
    folder = tmp_path / "sweep" / "tune" / "exp"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"state 1")
    (folder / "experiment_state-1.json").write_text("{}")
    (folder / "trial_0").mkdir()  # folders are not state files
    (folder / "trial_0" / "params.pkl").write_bytes(b"x")
    store = RunStorage.at(tmp_path / "sweep")
    digests = state_digests(store, "tune", "exp")
    assert digests == {"tuner.pkl": hashlib.sha256(b"state 1").hexdigest(),
                       "experiment_state-1.json": hashlib.sha256(b"{}").hexdigest()}

    record = StateRecord.for_folder(tmp_path / "cache", store, "tune", "exp")
    assert record.unknown(digests) == ["experiment_state-1.json", "tuner.pkl"]  # no record: nothing is trusted
    record.add(digests)
    (folder / "tuner.pkl").write_bytes(b"state 2")  # Tune rewrites it: recorded too, and the older one stays known
    record.add(state_digests(store, "tune", "exp"))
    again = StateRecord.for_folder(tmp_path / "cache", store, "tune", "exp")  # read back from disk
    assert again.unknown(state_digests(store, "tune", "exp")) == []
    (folder / "tuner.pkl").write_bytes(b"state 1")  # storage that lags behind: an earlier recorded content
    assert again.unknown(state_digests(store, "tune", "exp")) == []

    (folder / "tuner.pkl").write_bytes(b"planted")
    (folder / "searcher-state.pkl").write_bytes(b"planted too")
    assert again.unknown(state_digests(store, "tune", "exp")) == ["searcher-state.pkl", "tuner.pkl"]
    other = StateRecord.for_folder(tmp_path / "cache", RunStorage.at(tmp_path / "elsewhere"), "tune", "exp")
    assert other.path != again.path  # each sweep folder has its own record


def test_a_stale_copy_of_the_record_merges_instead_of_forgetting(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    stale = StateRecord(path)  # as unpickled from Tune's state: its memory predates later writes
    fresh = StateRecord(path)
    fresh.add({"a": "1"})
    fresh.add({"a": "2"})
    stale.add({"b": "3"})
    assert StateRecord(path).unknown({"a": "1", "b": "3"}) == [] and StateRecord(path).unknown({"a": "2"}) == []
    for k in range(KEEP + 5):
        fresh.add({"c": str(k)})
    assert StateRecord(path).unknown({"c": "0"}) == ["c"] and StateRecord(path).unknown({"c": str(KEEP + 4)}) == []
