"""The Kubernetes target: `cluster` (observe, apply, wait, roll back, remove), `snapshot` (what the namespace
holds), `patch` (the three-way JSON patch of an update), `jobs` (the evaluation Job), `lease` (one watcher per
namespace). The only watcher package that calls the Kubernetes API."""
