"""Model environments end to end, on the local target with real wrapper processes: an XGBoost model
refused by a runtime without xgboost and served by one that has it (RUNTIME_IMAGES), a scikit-learn
model logged with another pin and another Python deployed with the difference in its tags, and
ENV_MISMATCH=fail refusing it. Also the runtime choice in rendered Kubernetes manifests.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
import sklearn
import yaml
from mlflow import MlflowClient

from devstack.models import LoggedModel, log_iris, register_versions
from devstack.servers import LocalMlflow
from model_wrapper.contract.naming import model_slug
from tests.reconcile.runtimes import XGBOOST_CONTRACT, log_xgboost_model, xgboost_runtime
from tests.reconcile.test_local_target import state_dir  # noqa: F401 - the fixture that stops the wrappers
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once, render_version

ROOT = Path(__file__).resolve().parents[2]


def tags(name: str, version: str = "1") -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, version).tags)


def post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="session")
def xgboost_python() -> Path:
    try:
        return xgboost_runtime()
    except subprocess.CalledProcessError as e:
        if os.environ.get("CI"):  # CI reaches the package registry: a runtime it cannot build is a failure
            raise
        pytest.skip(f"could not build the XGBoost runtime (pip install xgboost): {e}")


@pytest.fixture(scope="session")
def xgboost_model(mlflow_server: LocalMlflow, xgboost_python: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    contract = tmp_path_factory.mktemp("xgb") / "contract.yaml"
    contract.write_text(XGBOOST_CONTRACT)
    yield log_xgboost_model(xgboost_python, "xgboost-iris-for-environment-tests", contract, ROOT)


@pytest.fixture
def local(make_deps: Callable[..., Deps], make_settings: Callable[..., Settings],
          state_dir: Path) -> Callable[..., Deps]:  # noqa: F811
    return lambda **overrides: make_deps(make_settings(deploy_target="local", local_state_dir=state_dir,
                                                       rollout_timeout_seconds=120, **overrides))


def test_an_xgboost_model_is_refused_by_a_runtime_without_xgboost_and_served_by_one_that_has_it(
    local: Callable[..., Deps], xgboost_model: dict[str, Any], xgboost_python: Path, model_name: str,
    production: dict[str, str],
) -> None:
    version = MlflowClient().get_model_version("xgboost-iris-for-environment-tests", xgboost_model["version"])
    register_versions(model_name, LoggedModel(model_name, "1", version.source or "", version.run_id or "", None),
                      tags=production)

    refused = reconcile_once(local())

    assert refused.failed == 1
    message = tags(model_name)["deployment_message"]
    assert tags(model_name)["deployment_status"] == "failed"
    assert "the model needs xgboost 3.0.5, which this runtime does not have" in message
    assert 'RUNTIME_IMAGES="xgboost=<image>"' in message and 'EXTRA_REQUIREMENTS="xgboost==3.0.5"' in message
    assert message.endswith(f"once fixed: python -m watcher retry {model_name} 1")
    assert reconcile_once(local()).unchanged == 1  # remembered: nothing changed

    served = reconcile_once(local(runtime_images=f"xgboost={xgboost_python}"))  # a new runtime: new inputs

    assert (served.deployed, served.failed) == (1, 0), served.failures
    after = tags(model_name)
    assert after["deployment_status"] == "deployed"
    answer = post(f"{after['model_endpoint']}predict", {"instances": xgboost_model["rows"]})
    assert answer["predictions"] == xgboost_model["predictions"]  # what XGBoost itself predicted


def test_a_model_logged_with_another_scikit_learn_and_python_deploys_with_the_differences_in_its_tags(
    local: Callable[..., Deps], mlflow_server: LocalMlflow, model_name: str, production: dict[str, str],
) -> None:
    logged = log_iris(model_name, tags=production, pip_requirements=["scikit-learn==1.6.1", "numpy>=2"])
    location = MlflowClient().get_model_version_download_uri(model_name, logged.version)
    bucket, _, key = location.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=mlflow_server.s3.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="devstack-key", aws_secret_access_key="devstack-secret")
    s3.put_object(Bucket=bucket, Key=f"{key}/python_env.yaml", Body=b"python: 3.9.18\n")
    report = reconcile_once(local())
    assert report.failed == 0, report.failures

    after = tags(model_name)
    assert after["deployment_status"] == "deployed"
    expected = [f"scikit-learn: logged with 1.6.1, this runtime has {sklearn.__version__}",
                f"Python: logged with 3.9.18, this runtime has {platform.python_version()}"]
    assert after["deployment_warnings"] == "; ".join(expected)
    assert "see deployment_warnings" in after["deployment_message"]
    with urllib.request.urlopen(f"{after['model_endpoint']}metadata", timeout=10) as response:
        assert json.loads(response.read())["environment"] == {"differences": expected}

    strict = f"{model_name}-strict"
    register_versions(strict, logged, tags=production)
    refused = reconcile_once(local(env_mismatch="fail"), only_model=strict)

    assert refused.failed == 1
    message = tags(strict)["deployment_message"]
    assert "ENV_MISMATCH=fail" in message and "scikit-learn: logged with 1.6.1" in message
    assert 'EXTRA_REQUIREMENTS="scikit-learn==1.6.1"' in message
    assert tags(model_name)["deployment_status"] == "deployed"  # the other one keeps serving


def test_runtime_images_choose_the_image_in_rendered_manifests_by_flavour_then_package(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], xgboost_model: dict[str, Any],
    iris: LoggedModel,
) -> None:
    images = "sklearn=reg.example/wrapper-sk:2,xgboost=reg.example/wrapper-gbm:1"
    deps = make_deps(make_settings(runtime_images=images))
    xgb = deps.registry.get("xgboost-iris-for-environment-tests", int(xgboost_model["version"]))
    sk = deps.registry.get(iris.name, int(iris.version))
    assert xgb is not None and sk is not None

    def image(version: Any, settings: Settings | None = None) -> str:
        rendered = render_version(make_deps(settings) if settings else deps, version, model_slug(version.name))
        return str(next(yaml.safe_load_all(rendered))["spec"]["template"]["spec"]["containers"][0]["image"])

    assert image(xgb) == "reg.example/wrapper-gbm:1"  # validated against the Kubernetes schema on the way
    assert image(sk) == "reg.example/wrapper-sk:2"
    by_package = make_settings(runtime_images="xgboost=reg.example/wrapper-gbm:1,scikit-learn=reg.example/pkg:3")
    assert image(sk, by_package) == "reg.example/pkg:3"  # its requirements.txt names scikit-learn
    assert image(sk, make_settings(runtime_images="xgboost=reg.example/wrapper-gbm:1")) == \
        "registry.example.org/model-wrapper:1.0"  # nothing matches: MODEL_WRAPPER_IMAGE


CUSTOM_MODEL = '''
import mlflow.pyfunc


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["x"] * 2
'''


@pytest.mark.parametrize(("files", "module", "advice"), [
    ({"mylib.py": CUSTOM_MODEL}, "mylib", 'code_paths=["mylib.py"]'),
    ({"researcher_models/__init__.py": "", "researcher_models/doubling.py": CUSTOM_MODEL}, "researcher_models.doubling",
     'code_paths=["researcher_models"]'),
])
def test_a_custom_model_whose_code_was_not_logged_fails_with_a_code_paths_hint_that_works_as_written(
    local: Callable[..., Deps], mlflow_server: LocalMlflow, model_name: str, production: dict[str, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], module: str, advice: str,
) -> None:
    """The researcher's PythonModel lives in their own module (a file, or a package folder) beside the script."""
    from model_wrapper.contract.spec import NEEDS_NEW_VERSION

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)  # where the researcher runs the script, so the hint's relative path is theirs
    monkeypatch.syspath_prepend(str(tmp_path))  # importable where the researcher logs it, not in the wrapper
    doubler = __import__(module, fromlist=["Doubler"]).Doubler

    def log_version(**code: Any) -> str:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=doubler(), registered_model_name=model_name,
                                           input_example=pd.DataFrame({"x": [1.0, 2.0]}), pip_requirements=["mlflow"],
                                           **code)
        version = str(info.registered_model_version)
        MlflowClient().set_model_version_tag(model_name, version, "deploy", production["deploy"])
        return version

    log_version()
    assert reconcile_once(local()).failed == 1

    message = tags(model_name)["deployment_message"]
    assert f"No module named '{module.split('.')[0]}'" in message
    assert "log_model(..., code_paths=" in message and advice in message
    assert NEEDS_NEW_VERSION in message and "retry" not in message, "v1's files will never hold the code"

    # Do what it says, literally: the list in the hint, as Python, in a new version.
    second = log_version(code_paths=json.loads(advice.removeprefix("code_paths=")))
    assert reconcile_once(local()).deployed == 1, tags(model_name, second)
    endpoint = tags(model_name, second)["model_endpoint"]
    assert post(f"{endpoint}invocations", {"dataframe_records": [{"x": 4.0}]}) == {"predictions": [{"x": 8.0}]}
