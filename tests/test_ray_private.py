"""Ray's private modules that lead-ray uses (lead_ray/runtime/ray_private.py): each still exists and does what lead-ray
relies on. A Ray upgrade that moves one fails here, by name."""

from __future__ import annotations

import logging
import os

from lead_ray.runtime.ray_private import single_node_mode, train_report_logger


def test_single_node_mode_sets_the_constant_and_the_variable() -> None:
    import ray._private.ray_constants as ray_constants

    single_node_mode()
    assert ray_constants.ENABLE_RAY_CLUSTER is False and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_the_train_report_logger_is_the_one_ray_train_writes_to() -> None:
    from ray.train.v2._internal.execution import context

    logger = train_report_logger()
    assert logger.name == context.__file__ and logger.name.endswith(".py")
    assert isinstance(logger, logging.Logger)
