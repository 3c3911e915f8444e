"""Library notices a guidelab user cannot act on, kept off the entry points' console.

Each is named with its source and why it tells our users nothing; every other warning and log line is left
alone. Only the apps' main() installs these: importing guidelab as a library changes no warning filter and no
logger.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

LIGHTNING_RANK_ZERO_LOGGER = "pytorch_lightning.utilities.rank_zero"


class _DropLitLoggerTip(logging.Filter):
    """Lightning 2.6 advertises its hosted LitLogger on every Trainer that has none
    (trainer/connectors/logger_connector/logger_connector.py): an advertisement, not a finding about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_library_notices() -> None:
    """Install the filters (idempotent)."""
    logger = logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER)
    if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
        logger.addFilter(_DropLitLoggerTip())
    # Lightning 2.6's own pytree helper (pytorch_lightning/utilities/_pytree.py) builds the LeafSpec that torch
    # >= 2.10 deprecates, so the first training step of every run warns about Lightning's code, not ours.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"pytorch_lightning\.")


@contextmanager
def logging_interval_notice_for(trainer):
    """Around `trainer.fit`: Lightning warns when an epoch holds fewer batches than `log_every_n_steps` ("Set a lower
    value for log_every_n_steps if you want to see logs"), but it counts that interval in global steps across
    epochs. A run bounded by at least that many steps is logged all the same (the digits runs: 12 batches an epoch,
    a line every 20 steps in metrics.csv), so for those the warning is dropped; an epoch-bounded run keeps it."""
    with warnings.catch_warnings():
        if trainer.max_steps >= trainer.log_every_n_steps:
            warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the "
                                    "logging interval")
        yield
