"""Where models run: `kubernetes` (the only package that talks to a cluster) and `local` (wrapper processes on
this machine). Both satisfy `watcher.reconcile.ports.Target` without importing it. May import clients,
render, config, decide and errors; the two targets never import each other."""
