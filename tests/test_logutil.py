"""medtl._logutil: a library's logger silenced for a while, in overlapping blocks of several threads."""

from __future__ import annotations

import logging

from medtl._logutil import quiet_logger


def test_blocks_closing_out_of_order_give_the_logger_its_level_back():
    """Two threads' blocks, the first closing first: each saving and restoring the level itself left the
    logger at the second block's level for good (pydicom's errors silenced in every later run)."""
    logger = logging.getLogger("medtl_test_quiet")
    logger.setLevel(logging.WARNING)
    first, second = quiet_logger(logger.name, logging.CRITICAL), quiet_logger(logger.name, logging.ERROR)
    first.__enter__()
    assert logger.level == logging.CRITICAL
    second.__enter__()
    assert logger.level == logging.CRITICAL  # the quietest open block wins
    first.__exit__(None, None, None)
    assert logger.level == logging.ERROR
    second.__exit__(None, None, None)
    assert logger.level == logging.WARNING


def test_an_error_inside_the_block_still_restores_the_level():
    logger = logging.getLogger("medtl_test_quiet_error")
    logger.setLevel(logging.INFO)
    try:
        with quiet_logger(logger.name, logging.CRITICAL):
            raise ValueError("x")
    except ValueError:
        pass
    assert logger.level == logging.INFO
