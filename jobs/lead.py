"""The lead-ray job: `python jobs/lead.py [--config PATH] [--output-dir DIR] [key=value ...]`.

With no arguments it runs configs/demo.yaml on a local Ray instance. The same file works under
`ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/lead.py --config ...`.
"""

from __future__ import annotations

import sys

from lead_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
