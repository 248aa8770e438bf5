"""`python -m watcher`: the command line (`watcher.entry.cli`)."""

import sys

from watcher.entry.cli import main

sys.exit(main())
