"""Ray Tune sweep of LEAD hyperparameters: `python tune/sweep.py [--config PATH] [--experiment NAME] [key=value ...]`.

Each trial is a full LEAD run; the search space is the config's `tune_space`. Rerun with the same experiment
name to resume. Also runs under `ray job submit --working-dir . -- python tune/sweep.py --config ...`.
"""

from __future__ import annotations

import sys

from lead_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
