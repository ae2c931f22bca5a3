"""``python -m smf_lib`` and the ``smf`` console script: the study's commands plus the views' ``snapshot``."""

import sys

from .study.cli import main
from .views.snapshot import SNAPSHOT_COMMAND


def run(argv=None) -> int:
    """Every command, the views' included."""
    return main(argv, commands=[SNAPSHOT_COMMAND])


if __name__ == "__main__":
    sys.exit(run())
