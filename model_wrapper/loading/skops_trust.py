"""skops' default trusted types, computed once per installation instead of at every start.

Called by `model_wrapper.loading.sklearn_loader` before it imports `skops.io`, and at image build
(`python -m model_wrapper.loading.skops_trust`). At import, `skops.io._trusted_types` lists the types skops
trusts by default: the name of every scikit-learn estimator (`sklearn.utils.all_estimators()`,
which imports every scikit-learn module) and of every SciPy and NumPy ufunc. That was the largest
single cost of a scikit-learn model's cold start, and its result depends only on what is installed.
So the lists skops computed are kept in a JSON file, keyed by the versions of skops, scikit-learn,
SciPy, NumPy and Python and by the hash of skops' own module; when the key matches, skops is given
a module holding exactly those lists, and loads and checks a file as before. Anything else (no
file, another version, an unreadable file) lets skops compute them as usual, and the file is
written for the next start where it can be.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import sys
import types
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MODULE = "skops.io._trusted_types"
# Where the image keeps the lists it computed at build; a user cache otherwise.
CACHE_ENV = "SKOPS_TRUST_CACHE"
_DEFAULT_CACHE = Path.home() / ".cache" / "model-wrapper" / "skops-trusted-types.json"
# The module's constants that are not computed: skops reads them as they are.
_LITERALS = {"PRIMITIVES_TYPES": [int, float, str, bool], "CONTAINER_TYPES": [list, set, map, tuple]}


def cache_path() -> Path:
    return Path(os.environ.get(CACHE_ENV) or _DEFAULT_CACHE)


def prepare(cache: Path | None = None) -> None:
    """Make `import skops.io` use the lists kept for this installation, or compute and keep them."""
    if MODULE in sys.modules or (key := _key()) is None:
        return
    cache = cache or cache_path()
    names = _read(cache, key)
    if names is not None:
        sys.modules[MODULE] = _module(names)
        return
    import skops.io  # noqa: F401 - computes the lists, which are then kept

    _write(cache, key, computed())


def computed() -> dict[str, list[str]]:
    """The type-name lists of skops' own module (imported for real if it is not yet)."""
    import skops.io._trusted_types as trusted

    return {name: list(value) for name, value in vars(trusted).items()
            if name.isupper() and not name.startswith("_") and name not in _LITERALS and isinstance(value, list)
            and all(isinstance(item, str) for item in value)}


def _key() -> str | None:
    """What the lists depend on; None when skops is not installed."""
    # Found without importing `skops.io`, which would compute the lists at once.
    spec = importlib.util.find_spec("skops")
    if spec is None or not spec.submodule_search_locations:
        return None
    origin = Path(next(iter(spec.submodule_search_locations))) / "io" / "_trusted_types.py"
    try:
        versions = [importlib.metadata.version(name) for name in ("skops", "scikit-learn", "scipy", "numpy")]
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        source = hashlib.sha256(origin.read_bytes()).hexdigest()
    except OSError:
        return None
    return " ".join([*versions, platform.python_version(), source])


def _read(cache: Path, key: str) -> dict[str, list[str]] | None:
    try:
        kept = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("key") != key or not isinstance(names := kept.get("names"), dict):
        return None
    if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in names.values()):
        return None
    return names


def _write(cache: Path, key: str, names: dict[str, list[str]]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"key": key, "names": names}))
        partial.replace(cache)  # whole or absent, also with several workers starting at once
    except OSError as e:
        log.debug("skops' trusted types not kept at %s: %s", cache, e)


def _module(names: dict[str, Any]) -> types.ModuleType:
    module = types.ModuleType(MODULE, "skops' default trusted types, as computed for this installation.")
    for name, value in {**_LITERALS, **names}.items():
        setattr(module, name, list(value))
    return module


if __name__ == "__main__":  # at image build: compute and keep the lists
    prepare()
    print(f"skops' trusted types kept at {cache_path()}")
