"""The watcher fixtures of the reconcile tests (settings and deps against the session's peers, the local target)."""

from tests.reconcile.conftest import _controller_resets, make_deps, make_settings  # noqa: F401
from tests.reconcile.test_local_target import local_deps, state_dir  # noqa: F401
