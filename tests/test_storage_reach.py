"""Cloud storage that cannot be reached is one line on the driver, before Ray starts: a wrong S3 endpoint (refused at
once) and GCS without credentials (which pyarrow's client would retry for 15 minutes)."""

from __future__ import annotations

import socket
import time

import pytest

from lead_ray.runtime.storage import PROBE_SECONDS, RunStorage, StorageError


def test_an_unreachable_s3_endpoint_is_one_line(monkeypatch, tmp_path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(k, v)
    storage = RunStorage.at("s3://lead-ray-test/runs/a")
    with pytest.raises(StorageError, match=r"^output_dir s3://lead-ray-test/runs/a is not reachable: .*AWS_ENDPOINT_URL"
                       ) as e:
        storage.check_reachable()
    assert "\n" not in str(e.value)
    RunStorage.at(tmp_path).check_reachable()  # a local folder is never probed


def test_gcs_without_credentials_fails_within_the_probe_budget(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud user credentials either
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # and no metadata server, as on a laptop
    storage = RunStorage.at("gs://lead-ray-test/runs/a")
    t0 = time.time()
    with pytest.raises(StorageError, match=r"^output_dir gcs?://lead-ray-test/runs/a is not reachable: .*OAuth2"):
        storage.check_reachable()
    assert time.time() - t0 < 4 * PROBE_SECONDS  # not pyarrow's 15-minute retry
