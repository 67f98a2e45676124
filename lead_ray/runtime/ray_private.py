"""Every use of Ray's private modules, each behind one function. tests/test_ray_private.py calls each, so a Ray
upgrade that moves one fails there, by name, rather than somewhere in a run."""

from __future__ import annotations

import logging
import os


def single_node_mode() -> None:
    """Ray's single-node mode (as on macOS): every service of a local instance binds to loopback. Child processes
    read the environment variable; this process read it when ray was imported, hence the constant too."""
    import ray._private.ray_constants as ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError("ray._private.ray_constants.ENABLE_RAY_CLUSTER is gone in this Ray version: lead-ray "
                           "cannot keep a local instance on loopback (see lead_ray/runtime/ray_private.py)")
    ray_constants.ENABLE_RAY_CLUSTER = False


def train_report_logger() -> logging.Logger:
    """The logger Ray Train writes each report's INFO line to: named after its file's path, which Ray Train's
    LoggingConfig does not reach."""
    from ray.train.v2._internal.execution import context as train_context

    return logging.getLogger(train_context.__file__)
