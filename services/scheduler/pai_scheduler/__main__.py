import pai_common  # noqa: F401  # first: its import hooks apply to every later import (import_hooks.py)
from pai_scheduler.shell import main

main()
