"""Where a run's files live: a local folder, or cloud storage (`s3://…`, `gs://…`) through pyarrow's filesystems.

With cloud storage the driver works in a node-local scratch copy of the run folder and mirrors it: the prepared pool
and prep/ go up after preparation, the outputs after training (summary.json last), and Ray Train keeps its
checkpoints in the bucket itself. Workers on any node open the pool and the model through `stage`: a node-local copy
made once per node, under a lock, and verified against the manifest (size and SHA-256 of every file) written at
upload. Credentials and endpoints come from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, an instance
profile…), as pyarrow reads them; never from files in the repo.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyarrow.fs as pafs

from lead_ray.config import LeadRayError
from lead_ray.runtime.console import log

MANIFEST = ".manifest.json"  # beside an uploaded file or folder: {relative path: [size, sha256]}
PROBE_SECONDS = 15  # GCS's client would retry a missing credential for 15 minutes before it fails


class StorageError(LeadRayError, OSError):
    """The run's cloud storage cannot be reached: a wrong endpoint, bucket or credential."""


def is_uri(path: str) -> bool:
    return "://" in str(path)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(local: Path) -> dict[str, Path]:
    """Relative name → file, for a file (its own name) or every file under a folder."""
    if local.is_file():
        return {local.name: local}
    return {p.relative_to(local).as_posix(): p for p in sorted(local.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class RunStorage:
    """A run folder on a filesystem: `root` on `fs` (the local one for a plain path)."""

    fs: pafs.FileSystem
    root: str

    @classmethod
    def at(cls, uri_or_path: str | Path) -> RunStorage:
        if is_uri(str(uri_or_path)):
            fs, root = pafs.FileSystem.from_uri(str(uri_or_path))
            return cls(fs, root.rstrip("/"))
        return cls(pafs.LocalFileSystem(), str(Path(uri_or_path).expanduser().resolve()))

    def check_reachable(self) -> None:
        """One request to the run's place, with a short retry budget, so that a wrong endpoint, bucket or
        credential is one line on the driver before anything starts, not a hang or a traceback mid-run."""
        if not self.remote:
            return
        probe = (pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=PROBE_SECONDS))
                 if self.fs.type_name == "gcs" else self.fs)
        try:
            probe.get_file_info(self.root)
        except OSError as e:
            reason = " ".join(str(e).split())[:300]
            raise StorageError(f"output_dir {self.uri()} is not reachable: {reason} (credentials and endpoints come "
                               "from the environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                               "GOOGLE_APPLICATION_CREDENTIALS…)") from None

    @property
    def remote(self) -> bool:
        return not isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def uri(self, *parts: str) -> str:
        """What `RunStorage.at` and `stage` take to find this place again on another node."""
        return f"{self.fs.type_name}://{self.path(*parts)}" if self.remote else self.path(*parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole file: a cloud PUT is atomic; a local file is written beside, then renamed over."""
        self.fs.create_dir(self.path(*parts[:-1]), recursive=True)
        if self.remote:
            with self.fs.open_output_stream(self.path(*parts)) as f:
                f.write(data)
            return
        partial = Path(self.path(*parts) + ".partial")
        partial.write_bytes(data)
        os.replace(partial, self.path(*parts))

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode(), *parts)

    def delete(self, *parts: str) -> None:
        info = self.fs.get_file_info(self.path(*parts))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(*parts))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(*parts))

    def upload(self, local: Path, *parts: str) -> bool:
        """Copy a local file or folder to `parts`, replacing what was there, then its manifest; skipped (False)
        when the manifest there already matches."""
        files = _files(local)
        manifest = json.dumps({name: [f.stat().st_size, _sha256(f)] for name, f in files.items()}, sort_keys=True)
        where = (*parts[:-1], parts[-1] + MANIFEST)
        if self.exists(*where) and self.read_text(*where) == manifest:
            return False
        self.delete(*where)
        self.delete(*parts)
        for name, file in files.items():
            target = self.path(*parts, name) if local.is_dir() else self.path(*parts)
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(file, "rb") as src, self.fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
        self.write_text(manifest, *where)
        return True

    def download(self, local: Path, *parts: str) -> bool:
        """Copy `parts` (a file or folder) to `local`, replacing it; False if storage has nothing there. Each file
        is one streamed GET (a chunked copy makes one ranged request per MB)."""
        info = self.fs.get_file_info(self.path(*parts))
        if info.type == pafs.FileType.NotFound:
            return False
        shutil.rmtree(local, ignore_errors=True) if local.is_dir() else local.unlink(missing_ok=True)
        if info.type == pafs.FileType.File:
            files = {local: info.path}
        else:
            local.mkdir(parents=True)
            found = self.fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
            files = {local / f.path[len(info.path) + 1:]: f.path for f in found if f.type == pafs.FileType.File}
        for target, source in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(source) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
        return True


def stage(uri: str, cache_root: Path | str) -> Path:
    """A node-local copy of an uploaded file or folder (a plain path is returned as it is).

    Made once per node: under a lock, so workers sharing the node wait for one download; into a partial folder,
    checked against the upload's manifest (size and SHA-256 per file) and only then renamed into place.
    """
    if not is_uri(uri):
        if not Path(uri).exists():
            raise FileNotFoundError(
                f"{uri} is not on node {_node()}: the run's output_dir is a local folder, which only nodes sharing "
                "that filesystem can open. On a cluster without a shared filesystem set output_dir to s3://… or "
                "gs://…, and lead-ray stages the files onto each node.")
        return Path(uri)
    started = time.perf_counter()
    cache_root = Path(cache_root).expanduser()
    storage = RunStorage.at(uri)
    parent, name = storage.root.rsplit("/", 1)
    manifest_text = RunStorage(storage.fs, parent).read_text(name + MANIFEST)
    manifest = json.loads(manifest_text)
    key = hashlib.sha256((uri + manifest_text).encode()).hexdigest()[:16]
    folder = cache_root / "staged" / key
    target = folder / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "complete").is_file():
            return target
        partial = folder.with_name(key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        RunStorage(storage.fs, parent).download(partial / name, name)
        got = {n: [p.stat().st_size, _sha256(p)] for n, p in _files(partial / name).items()}
        if got != manifest:
            bad = sorted(n for n in manifest.keys() | got.keys() if manifest.get(n) != got.get(n))
            raise OSError(f"staging {uri}: {len(bad)} file(s) differ from the upload's manifest, e.g. {bad[0]}")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        (folder / "complete").write_text(manifest_text)
    size = sum(size for size, _ in manifest.values())
    log(f"staged {uri} onto node {_node()}: {size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
    return target


def _node() -> str:
    """This Ray node's id (short), for messages that say where a file was or was not found."""
    import ray

    return ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else "(driver, no Ray)"
