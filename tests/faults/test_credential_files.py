"""S3 credentials from a mounted file only: a wrapper process and a watcher pass, as they run on Kubernetes.

Each process gets no AWS key variable at all, only `AWS_SHARED_CREDENTIALS_FILE` naming a file
in the shape the Secret's `credentials` key holds, and a HOME without `~/.aws`. moto's IAM check
is on, and the file holds the key of an IAM user created in moto for the test: the only key S3
accepts, so a pass proves that boto3's chain (the watcher's) and MLflow's (the wrapper's) read
that file, and a file with another key proves that the check is real.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import httpx
import pytest

from devstack.models import log_iris
from devstack.servers import LOCAL_AWS_ENV, QUIET_MLFLOW_ENV, LocalMlflow, LocalS3
from model_wrapper.contract.naming import model_slug
from tests.faults.support import credentials_checked, run_watcher, tags, watcher_env
from tests.wrapper.conftest import WrapperProcess
from watcher.config.settings import Settings

KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture
def iam_key(s3: LocalS3) -> tuple[str, str]:
    """An access key of a new moto IAM user allowed to use S3 (created while the IAM check is off)."""
    iam = boto3.client("iam", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                       aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    user = f"model-reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture
def credentials_file(tmp_path: Path) -> Callable[[tuple[str, str]], Path]:
    """Write an AWS shared credentials file, as the Secret's `credentials` key holds it, and return its path."""

    def write(key: tuple[str, str]) -> Path:
        path = tmp_path / f"secret-{uuid.uuid4().hex[:6]}" / "credentials"
        path.parent.mkdir()
        path.write_text(f"[default]\naws_access_key_id = {key[0]}\naws_secret_access_key = {key[1]}\n")
        return path

    return write


def no_key_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Take every AWS key variable out of this process (child processes inherit it); a HOME without ~/.aws."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    return {"HOME": str(home), "AWS_CONFIG_FILE": str(home / "no-aws-config"), "AWS_DEFAULT_REGION": "us-east-1"}


def wrapper_env(mlflow_server: LocalMlflow, name: str, source: str, run_id: str, credentials: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": mlflow_server.tracking_uri, "MLFLOW_S3_ENDPOINT_URL": mlflow_server.s3.endpoint_url,
            **QUIET_MLFLOW_ENV, "MODEL_NAME": name, "MODEL_VERSION": "1", "MODEL_SOURCE": source,
            "MODEL_RUN_ID": run_id, "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}


def test_a_wrapper_loads_its_model_with_the_s3_keys_of_the_mounted_file_alone(
    mlflow_server: LocalMlflow, s3: LocalS3, model_name: str, iam_key: tuple[str, str],
    credentials_file: Callable[[tuple[str, str]], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    model = log_iris(model_name, kind="tree")
    env = {**wrapper_env(mlflow_server, model_name, model.source, model.run_id, credentials_file(iam_key)),
           **no_key_variables(monkeypatch, tmp_path)}
    slug = model_slug(model_name)
    with credentials_checked(s3):
        served = WrapperProcess(env).start()
        try:
            served.wait_until(served.base(slug) + "ready")
            answer = httpx.post(served.base(slug) + "predict", timeout=30, json={"instances": [
                {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]})
        finally:
            served.stop()
        refused = WrapperProcess({**env, "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file(
            (LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"], LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"])))}).start()
        refused_code = refused.exit_code()
    assert answer.status_code == 200 and answer.json()["predictions"] == [0], answer.text
    assert iam_key[1] not in served.log()
    assert "Found credentials in shared credentials file" in served.log()  # botocore says where it found them
    assert refused_code != 0, refused.log()  # the same wrapper with a key S3 does not know cannot load the model
    assert "Access Key Id you provided does not exist" in refused.log(), refused.log()[-2000:]


def no_keys(settings: Settings) -> dict[str, str]:
    return {key: value for key, value in watcher_env(settings).items() if key not in KEY_VARIABLES}


def test_a_watcher_pass_reads_contracts_with_the_s3_keys_of_the_mounted_file_alone(
    make_settings: Callable[..., Settings], s3: LocalS3, model_name: str, production: dict[str, str],
    iam_key: tuple[str, str], credentials_file: Callable[[tuple[str, str]], Path], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    settings = make_settings(aws_access_key_id=None, aws_secret_access_key=None)
    env = {**no_keys(settings), **no_key_variables(monkeypatch, tmp_path), "LOG_FORMAT": "text"}
    assert not set(env) & set(KEY_VARIABLES)
    wrong = credentials_file((LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"], LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"]))

    with credentials_checked(s3):
        refused = run_watcher(["run-once"], {**env, "AWS_SHARED_CREDENTIALS_FILE": str(wrong)})
        refused_tags = tags(model_name)
        passed = run_watcher(["run-once"], {**env, "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file(iam_key))})

    # A key S3 does not know, from the same file: refused, so the file is what the watcher reads.
    assert refused.returncode == 0, refused.stderr
    assert "S3 refused access" in refused_tags["deployment_message"], refused_tags
    assert passed.returncode == 0, passed.stderr
    assert tags(model_name)["deployment_status"] == "deployed", tags(model_name)
    assert iam_key[1] not in passed.stderr + passed.stdout


# --- the API keys and the webhook secret, from files ---------------------------------------------


def test_the_webhook_secret_is_read_from_its_file_and_a_bad_file_names_the_variable(tmp_path: Path) -> None:
    from watcher.config.settings import load_settings
    from watcher.errors import SettingsInvalid

    secret = tmp_path / "WEBHOOK_SECRET"
    secret.write_text("hmac-secret-from-file\n")  # `kubectl create secret --from-file` keeps a final newline
    settings = load_settings(mlflow_tracking_uri="http://m:5000", webhook_secret="from-the-environment",
                             webhook_secret_file=secret)
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "hmac-secret-from-file"
    for broken in (tmp_path / "missing", _written(tmp_path / "empty", "\n")):
        with pytest.raises(SettingsInvalid, match="WEBHOOK_SECRET_FILE") as raised:
            load_settings(mlflow_tracking_uri="http://m:5000", webhook_secret_file=broken)
        assert str(broken) in str(raised.value)


def test_the_wrapper_reads_its_api_keys_from_their_file_and_redacts_the_s3_file_keys(tmp_path: Path) -> None:
    from model_wrapper.config.settings import SettingsError, load_settings

    keys, credentials = _written(tmp_path / "API_KEYS", "key-one-abcd,key-two-efgh\n"), tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIAFILEKEY1\naws_secret_access_key = file-secret-9\n")
    base = {"MODEL_NAME": "iris", "MODEL_VERSION": "1", "MODEL_SOURCE": "s3://b/k", "API_KEYS": "",
            "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    with pytest.MonkeyPatch.context() as patched:
        patched.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
        settings = load_settings({**base, "API_KEYS_FILE": str(keys)})
        assert settings.key_list() == [b"key-one-abcd", b"key-two-efgh"]
        assert {"key-one-abcd", "AKIAFILEKEY1", "file-secret-9"} <= set(settings.secrets())
    with pytest.raises(SettingsError, match="API_KEYS_FILE"):
        load_settings({**base, "API_KEYS_FILE": str(tmp_path / "missing")})


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
