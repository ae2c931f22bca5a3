import sys

from .study.cli import main
from .views.snapshot import SNAPSHOT_COMMAND

sys.exit(main(commands=[SNAPSHOT_COMMAND]))
