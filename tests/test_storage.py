"""Cloud storage through a real S3 API (moto's server on 127.0.0.1): upload with a manifest, download, and node-local
staging that is made once, under a lock, and refuses a copy that differs from the upload."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from lead_ray.runtime.storage import MANIFEST, RunStorage, is_uri, stage


def make_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(bytes(range(256)) * 40)
    (root / "sub" / "b.txt").write_text("hello")
    return root


def test_upload_download_and_manifest(s3_env, tmp_path: Path) -> None:
    storage = RunStorage.at("s3://lead-ray-test/unit/run")
    assert storage.remote and storage.uri("pool") == "s3://lead-ray-test/unit/run/pool"
    folder = make_folder(tmp_path / "src")
    assert storage.upload(folder, "pool")
    assert not storage.upload(folder, "pool")  # the manifest there matches: nothing to send
    manifest = json.loads(storage.read_text("pool" + MANIFEST))
    assert manifest == {"a.bin": [10240, manifest["a.bin"][1]], "sub/b.txt": [5, manifest["sub/b.txt"][1]]}
    assert storage.download(tmp_path / "back", "pool")
    assert (tmp_path / "back" / "a.bin").read_bytes() == (folder / "a.bin").read_bytes()
    assert (tmp_path / "back" / "sub" / "b.txt").read_text() == "hello"
    assert not storage.download(tmp_path / "none", "missing")
    storage.delete("pool")
    assert not storage.exists("pool")
    local = RunStorage.at(tmp_path / "plain")
    assert not local.remote and not is_uri(local.uri("x"))
    with pytest.raises(FileNotFoundError, match="is not on node .*set output_dir to s3://"):
        stage(local.uri("x"), tmp_path)  # a plain path this node cannot see: say why, and what to do
    (tmp_path / "plain").mkdir()
    assert stage(local.uri(), tmp_path) == tmp_path / "plain"  # one it can see is used where it is


def test_stage_once_per_node_under_a_lock(s3_env, tmp_path: Path) -> None:
    storage = RunStorage.at("s3://lead-ray-test/unit/stage")
    storage.upload(make_folder(tmp_path / "src"), "model")
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(stage(storage.uri("model"), tmp_path / "cache")))
               for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(paths)) == 1 and (paths[0] / "sub" / "b.txt").read_text() == "hello"
    assert len(list((tmp_path / "cache" / "staged").glob("*/complete"))) == 1  # one copy on this node
    mtime = (paths[0] / "a.bin").stat().st_mtime_ns
    assert stage(storage.uri("model"), tmp_path / "cache") == paths[0]
    assert (paths[0] / "a.bin").stat().st_mtime_ns == mtime  # not downloaded again


def test_stage_refuses_a_copy_that_differs_from_the_manifest(s3_env, tmp_path: Path) -> None:
    storage = RunStorage.at("s3://lead-ray-test/unit/corrupt")
    storage.upload(make_folder(tmp_path / "src"), "pool")
    storage.write_text("tampered", "pool", "sub", "b.txt")  # same name, other bytes: the manifest no longer holds
    with pytest.raises(OSError, match=r"1 file\(s\) differ from the upload's manifest, e.g. sub/b.txt"):
        stage(storage.uri("pool"), tmp_path / "cache")
    assert not list((tmp_path / "cache" / "staged").glob("*/complete"))
