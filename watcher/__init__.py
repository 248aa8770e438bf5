"""Service Builder's watcher: reconciles MLflow model versions selected for production into live services."""
