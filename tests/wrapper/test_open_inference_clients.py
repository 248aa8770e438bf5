"""The Open Inference Protocol clients users already have, unchanged, against the wrapper: NVIDIA's
`tritonclient[http]` (health, metadata, infer with numpy inputs) and KServe's `InferenceRESTClient`
(protocol v2). Each runs in its own virtualenv (tests/wrapper/oip_peers.py), from the scripts in
tests/wrapper/oip_clients/, at the pod root and under the model's prefix (the Ingress path); the
same script against MLServer serving the same models gives the same numbers.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.wrapper.oip_peers import peer_python
from tests.wrapper.oip_servers import Peers

CLIENTS = Path(__file__).with_name("oip_clients")
# The scripts' answers: the iris rows they send are one of each species, in order; the tensor's row sums.
EXPECTED = {"columns": ([[0], [1], [2]], "int64"), "tensor": ([[6.0], [15.0]], "float32")}


def _run(peer: str, script: str, url: str, *models: str) -> dict[str, Any]:
    done = subprocess.run([str(peer_python(peer)), str(CLIENTS / script), url, *models], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _url(peers: Peers, model: str, where: str) -> str:
    served = peers.models[model]
    root = f"127.0.0.1:{served.wrapper.port}"
    return root if where == "pod root" else f"{root}/{served.slug}/api"


CASES = [(model, kind, where) for model, kind in (("iris", "columns"), ("one_tensor", "tensor"))
         for where in ("pod root", "under the prefix")]


@pytest.mark.parametrize(("model", "kind", "where"), CASES, ids=[f"{k} at the {w}" for _, k, w in CASES])
def test_tritonclient_reads_health_and_metadata_and_infers_with_numpy(peers: Peers, model: str, kind: str,
                                                                      where: str) -> None:
    slug = peers.models[model].slug
    ours = _run("mlserver", "triton_client.py", _url(peers, model, where), slug, kind)
    theirs = _run("mlserver", "triton_client.py", peers.mlserver_root.removeprefix("http://"), slug, kind)

    assert ours["live"] is ours["ready"] is ours["model_ready"] is True
    assert (ours["output"], ours["dtype"]) == (theirs["output"], theirs["dtype"]) == EXPECTED[kind]
    for key in ("name", "inputs", "outputs"):
        assert ours["metadata"][key] == theirs["metadata"][key]
    assert ours["server"] == theirs["server"] == ["extensions", "name", "version"]


@pytest.mark.parametrize(("model", "kind", "where"), CASES, ids=[f"{k} at the {w}" for _, k, w in CASES])
def test_kserves_rest_client_with_protocol_v2_infers_and_reads_readiness(peers: Peers, model: str, kind: str,
                                                                         where: str) -> None:
    ours = _run("kserve", "kserve_client.py", "http://" + _url(peers, model, where), peers.models[model].slug, kind)

    assert ours["live"] is ours["ready"] is ours["model_ready"] is True
    assert (ours["output"], ours["dtype"]) == EXPECTED[kind] and ours["name"] == "output-1"
