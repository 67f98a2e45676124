"""lead-ray deletes or replaces only what it made: run folders carry a marker, checkpoints a config key, and a
finished run's outputs are replaced as a whole, at the end. File-system only (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lead_ray.config import ConfigError, LeadConfig
from lead_ray.runtime.folders import FINISHED, RUN_MARKER, claim_folder, publish_outputs
from lead_ray.runtime.storage import RunStorage
from lead_ray.train.fit import RunError, _resume_or_reset


def test_claim_folder(tmp_path: Path) -> None:
    run = tmp_path / "out" / "run"
    claim_folder(run)
    assert (run / RUN_MARKER).is_file()
    claim_folder(run)  # ours already: fine
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "data.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="'output_dir'.*did not make"):
        claim_folder(tmp_path / "theirs")
    assert (tmp_path / "theirs" / "data.txt").read_text() == "keep me" and not (tmp_path / "theirs" / RUN_MARKER).exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="'output_dir'.*is a file"):
        claim_folder(tmp_path / "afile")
    with pytest.raises(ConfigError, match="'output_dir': cannot write"):
        claim_folder(tmp_path / "afile" / "run")  # a parent that is a file
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_folder(empty)  # an empty folder may be taken
    assert (empty / RUN_MARKER).is_file()


def test_planted_ray_folder_survives(tmp_path: Path) -> None:
    """With output_dir /tmp and run_name ray, or a `ray/` lead-ray did not make inside a run: never deleted."""
    cfg = LeadConfig.from_flat(output_dir=str(tmp_path), run_name="r").validate()
    claim_folder(cfg.run_dir)
    planted = cfg.run_dir / "ray" / "session_latest"
    planted.mkdir(parents=True)
    (planted / "logs.txt").write_text("another Ray instance's files")
    with pytest.raises(RunError, match="not made by lead-ray"):
        _resume_or_reset(cfg, RunStorage.at(cfg.run_dir))
    assert (planted / "logs.txt").read_text() == "another Ray instance's files"


def test_resume_or_reset_keys(tmp_path: Path) -> None:
    cfg = LeadConfig.from_flat(output_dir=str(tmp_path), run_name="r").validate()
    claim_folder(cfg.run_dir)
    key = _resume_or_reset(cfg, RunStorage.at(cfg.run_dir))
    ckpt = cfg.run_dir / "ray" / "train" / "checkpoint_0"
    ckpt.mkdir(parents=True)
    assert _resume_or_reset(cfg, RunStorage.at(cfg.run_dir)) == key and ckpt.exists()  # interrupted, same config: resume
    assert (cfg.run_dir / "ray" / "config.yaml").exists() and not (cfg.run_dir / "config.yaml").exists()
    # a published earlier run (its summary.json) does not stop this config's interrupted run from resuming
    (cfg.run_dir / "summary.json").write_text(json.dumps({"config_key": key}))
    assert _resume_or_reset(cfg, RunStorage.at(cfg.run_dir)) == key and ckpt.exists()
    # these checkpoints finished and published: a rerun trains afresh (the published outputs stay until replaced)
    (cfg.run_dir / "ray" / FINISHED).write_text("{}")
    _resume_or_reset(cfg, RunStorage.at(cfg.run_dir))
    assert not ckpt.exists() and (cfg.run_dir / "summary.json").exists()
    assert not (cfg.run_dir / "ray" / FINISHED).exists()
    # an interrupted run, rerun with other operational keys (logging, evaluation batch size): it resumes
    ckpt.mkdir(parents=True)
    cosmetic = LeadConfig.from_flat(output_dir=str(tmp_path), run_name="r", verbose=True, report_to=["tensorboard"],
                          eval_batch_size=3, logging_dir=str(tmp_path / "logs"), max_failures=0).validate()
    assert _resume_or_reset(cosmetic, RunStorage.at(cfg.run_dir)) == key and ckpt.exists()
    # ... with other result keys: refused in one line naming them, and nothing deleted
    other = LeadConfig.from_flat(output_dir=str(tmp_path), run_name="r", seed=1, learning_rate=1e-4).validate()
    with pytest.raises(RunError, match=r"other values of learning_rate, seed; .*overwrite_output_dir=true") as e:
        _resume_or_reset(other, RunStorage.at(cfg.run_dir))
    assert "\n" not in str(e.value) and ckpt.exists()
    # ... unless overwrite_output_dir: then afresh
    forced = LeadConfig.from_flat(output_dir=str(tmp_path), run_name="r", seed=1, learning_rate=1e-4,
                        overwrite_output_dir=True).validate()
    assert _resume_or_reset(forced, RunStorage.at(cfg.run_dir)) != key and not ckpt.exists()


def test_result_changes_reads_an_older_config() -> None:
    """A saved config without a newer key counts it at its default; keys that no longer exist are ignored."""
    from lead_ray.config import OPERATIONAL, result_changes

    cfg = LeadConfig.from_flat(learning_rate=1e-4)
    saved = {k: v for k, v in cfg.to_dict().items() if k != "quota"}
    assert result_changes({**saved, "a_removed_key": 1}, cfg) == []
    other = next(q for q in ("floor", "proportional") if q != cfg.selection.quota)
    assert result_changes({**saved, "quota": other}, cfg) == ["quota"]
    assert result_changes({**saved, "verbose": True, "eval_batch_size": 1}, cfg) == []
    assert set(OPERATIONAL) <= set(cfg.to_dict())  # every operational key is a real key


def test_publish_outputs_replaces_as_a_whole(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for name, text in (("config.yaml", "old"), ("summary.json", "old"), ("selections.parquet", "old")):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    (run / "merged").mkdir()
    (run / "merged" / "w").write_text("old")
    (run / "model").mkdir()
    (run / "model" / "w").write_text("old")
    (run / "mine.txt").write_text("a user's note")
    staging = run / ".outputs.partial"
    staging.mkdir()
    for name in ("config.yaml", "summary.json", "selections.parquet"):
        (staging / name).write_text("new")
    (staging / "model").mkdir()
    (staging / "model" / "w").write_text("new")
    publish_outputs(staging, run)
    assert all((run / n).read_text() == "new" for n in ("config.yaml", "summary.json", "selections.parquet"))
    assert (run / "model" / "w").read_text() == "new"
    assert not (run / "merged").exists()  # the old run's merged model does not sit beside the new adapter
    assert (run / "mine.txt").read_text() == "a user's note"  # not an output: untouched
    assert not staging.exists() and not list(run.glob(".*.old"))


def test_file_digest_follows_content_not_path_or_time(tmp_path: Path) -> None:
    """The pool's stage key hashes what the data files hold, so a copy elsewhere (a job's uploaded working dir)
    reuses the prepared pool, and any changed byte does not."""
    import hashlib
    import os

    from lead_ray.runtime.stages import file_digest

    a, b = tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl"
    a.write_bytes(b'{"instruction": "hi", "output": "hello"}\n')
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    os.utime(b, (1, 1))
    assert file_digest(str(a)) == file_digest(str(b)) == hashlib.sha256(a.read_bytes()).hexdigest()
    b.write_bytes(a.read_bytes().replace(b"hello", b"hellO"))
    assert file_digest(str(a)) != file_digest(str(b))


def test_links_where_outputs_go_are_replaced_never_followed(tmp_path: Path) -> None:
    """A `report/` (or `merged/`, or `summary.json`) that is a symbolic link once ended the run in "Cannot call
    rmtree on a symbolic link". The link is replaced (or removed) and what it points to is left alone."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("someone else's")
    (run / "report").symlink_to(elsewhere, target_is_directory=True)
    (run / "merged").symlink_to(elsewhere, target_is_directory=True)  # not made by this run: removed
    (run / "summary.json").symlink_to(elsewhere / "keep.txt")
    staging = run / ".outputs.partial"
    (staging / "report").mkdir(parents=True)
    (staging / "report" / "summary.md").write_text("new")
    (staging / "summary.json").write_text("{}")
    publish_outputs(staging, run)
    assert not (run / "report").is_symlink() and (run / "report" / "summary.md").read_text() == "new"
    assert not (run / "summary.json").is_symlink() and (run / "summary.json").read_text() == "{}"
    assert not (run / "merged").exists() and not (run / "merged").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
    assert (elsewhere / "keep.txt").read_text() == "someone else's"
