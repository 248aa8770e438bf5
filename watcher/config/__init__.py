"""The watcher's one settings object (`settings`, validated at start-up) and its logging and redaction
(`logs`). May import decide and errors."""
