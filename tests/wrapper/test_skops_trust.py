"""skops' default trusted types kept per installation (`model_wrapper.loading.skops_trust`): skops then trusts,
refuses and loads exactly as when it computes them itself, without importing all of scikit-learn.

Each case runs in a fresh interpreter (what skops computes depends on what is imported), once with
no kept lists (skops computes them; they are kept) and once with them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from model_wrapper.loading.skops_trust import CACHE_ENV

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import numpy as np
from model_wrapper.loading.skops_trust import MODULE, computed, prepare
prepare()
import skops.io
from sklearn.tree import DecisionTreeClassifier

kept = sys.modules[MODULE].__spec__ is None
tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit([[0, 1], [1, 0], [1, 1], [0, 0]], [0, 1, 1, 0])
dumped = skops.io.dumps(tree)
untrusted = skops.io.get_untrusted_types(data=dumped)
try:
    skops.io.loads(dumped)
    refusal = None
except Exception as e:
    refusal = f"{type(e).__name__}: {e}"
loaded = skops.io.loads(dumped, trusted=untrusted)
print(json.dumps({"kept": kept, "names": computed(), "untrusted": untrusted, "refusal": refusal,
                  "predictions": loaded.predict([[0, 1], [1, 1]]).tolist(),
                  "all_of_sklearn": "sklearn.utils._testing" in sys.modules}))
"""


def _probe(cache: Path) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={"PATH": "/usr/bin:/bin", CACHE_ENV: str(cache), "PYTHONPATH": str(ROOT)}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_skops_trusts_refuses_and_loads_alike_with_the_kept_lists_without_importing_all_of_sklearn(
        tmp_path: Path) -> None:
    cache = tmp_path / "trusted.json"

    computed = _probe(cache)
    kept = _probe(cache)

    assert (computed["kept"], kept["kept"]) == (False, True)
    assert kept["names"] == computed["names"]
    assert len(kept["names"]["SKLEARN_ESTIMATOR_TYPE_NAMES"]) > 100
    assert "sklearn.tree._classes.DecisionTreeClassifier" in kept["names"]["SKLEARN_ESTIMATOR_TYPE_NAMES"]
    assert (kept["untrusted"], kept["refusal"], kept["predictions"]) == (
        computed["untrusted"], computed["refusal"], computed["predictions"])
    assert kept["refusal"] is not None and "sklearn.tree._tree.Tree" in kept["refusal"]
    assert computed["all_of_sklearn"] and not kept["all_of_sklearn"]


def test_lists_kept_for_another_installation_are_computed_again(tmp_path: Path) -> None:
    cache = tmp_path / "trusted.json"
    cache.write_text(json.dumps({"key": "skops 0.1 of another machine", "names": {"SKLEARN_ESTIMATOR_TYPE_NAMES": []}}))

    again = _probe(cache)

    assert not again["kept"]
    assert json.loads(cache.read_text())["names"] == again["names"]
    assert _probe(cache)["kept"]
