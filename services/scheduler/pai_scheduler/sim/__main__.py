import sys

from pai_scheduler.sim.cli import main

sys.exit(main())
