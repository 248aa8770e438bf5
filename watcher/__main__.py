import sys

from watcher.entry.cli import main

sys.exit(main())
