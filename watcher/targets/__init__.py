"""Where models run: `kubernetes` (the only package that talks to a cluster) and `local` (wrapper processes on
this machine, with `local_front`, `local_ingress`, and `local_rollout` / `local_shadow` for a candidate beside
the live version). Both satisfy `watcher.reconcile.ports.Target` without importing it. May import clients,
render, config, decide and errors; the two targets never import each other."""
