"""Where a run lives and runs (owned by `lead_ray.runtime`): its name and folders, the Ray instance, the seed."""

from __future__ import annotations

from dataclasses import dataclass

from lead_ray.config.fields import arg

CLOUD_SCHEMES = ("s3", "gs")  # output_dir URIs, through pyarrow's filesystems


@dataclass(frozen=True)
class RunArgs:
    run_name: str = arg("demo", "the run's folder name under `output_dir` (one name: no `/`, not `.` or `..`)",
                        operational=True)
    output_dir: str = arg("outputs", "where runs go: a local folder, or `s3://…` / `gs://…` (see \"On a cluster\")",
                          operational=True)
    cache_dir: str = arg("~/.cache/lead-ray", "node-local: built models, staged copies of a cloud run's pool and "
                         "model, a cloud run's scratch folder", operational=True)
    seed: int = arg(0, "the seed of the k-means, the bandit and training (faiss and torch take 32-bit seeds)",
                    ge=0, lt=2**31)
    ray_address: str | None = arg(None, "a cluster to join; null joins `RAY_ADDRESS` (set by `ray job submit`) or "
                                  "starts a local instance bound to 127.0.0.1", operational=True)
    num_cpus: int | None = arg(None, "logical CPUs of a local instance (null: max(4, cores)); at least 2, and one "
                               "more than the largest actor pool (`preprocessing_num_workers`, `embedding_concurrency`, "
                               "`score_concurrency`)", ge=2, le=1_000_000, operational=True)
    overwrite_output_dir: bool = arg(False, "a rerun whose result keys differ from the interrupted run's deletes its "
                                     "checkpoints instead of refusing (see \"Failures and resuming\")",
                                     operational=True)
