"""Library notices a guidelab user cannot act on, kept off the entry points' console.

Each is named with its source and why it tells our users nothing; every other warning and log line is left
alone. Only the apps' main() installs these: importing guidelab as a library changes no warning filter and no
logger.
"""

from __future__ import annotations

import logging
import warnings

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
