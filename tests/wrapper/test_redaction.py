"""One redactor for the watcher, the wrapper and the evaluation Job: registered secrets, credential-shaped
text and URL user-info never reach a log line or the Job's result (its termination message)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from model_wrapper.config.logs import configure_logging
from model_wrapper.config.settings import load_settings
from model_wrapper.contract.redaction import redact
from model_wrapper.evaluate import job
from watcher.config import logs as watcher_logs

LEAKY = ("loading s3://AKIAEXAMPLEKEY:wJalrXUtnFEMI@minio.example:9000/models/m-1 failed; "
         "the server said password=hunter22 and 'api_key': \"abc123def\"")
NEVER = ("AKIAEXAMPLEKEY", "wJalrXUtnFEMI", "hunter22", "abc123def")


@pytest.mark.parametrize(("text", "expected"), [
    ("s3://user:pass@host/x", "s3://***@host/x"),
    ("password=hunter22 ok", "password=*** ok"),
    ("AWS_SECRET_ACCESS_KEY: abc/def+ghi", "AWS_SECRET_ACCESS_KEY: ***"),
    ("token='t0k3n'", "token='***'"),
    ("nothing secret here: accuracy=0.95", "nothing secret here: accuracy=0.95"),
])
def test_the_shared_redactor_masks_credential_shaped_text_and_url_user_info(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_given_secrets_are_masked_longest_first() -> None:
    assert redact("key abcdef and abcdefgh", ["abcdef", "abcdefgh"]) == "key *** and ***"


def test_the_watcher_redacts_exactly_as_the_wrapper_does() -> None:
    watcher_logs.register_secrets(["registered-secret-value"])
    text = LEAKY + " registered-secret-value"
    assert watcher_logs.redact(text) == redact(text, ["registered-secret-value"])


def _job_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"MODEL_NAME": "iris", "MODEL_VERSION": "3", "MODEL_SOURCE": "models:/m-1",
                       "TERMINATION_LOG": str(tmp_path / "termination-log"), "LOG_FORMAT": "json"}.items():
        monkeypatch.setenv(key, value)


def test_the_evaluation_jobs_log_redacts_credentials_and_url_user_info(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _job_settings(tmp_path, monkeypatch)
    configure_logging(load_settings())  # what the Job configures before it evaluates
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("model_wrapper.evaluate.job").error("%s", LEAKY)
    line = stream.getvalue()
    assert "minio.example" in line and not any(secret in line for secret in NEVER), line


def test_the_evaluation_jobs_result_and_termination_message_are_redacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _job_settings(tmp_path, monkeypatch)
    # The project's own seam: what the evaluation found, as the loader would word a failure.
    monkeypatch.setattr(job, "evaluate", lambda settings, args, workdir: job._problem("model", LEAKY))
    assert job.main([]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    for text in (printed, (tmp_path / "termination-log").read_text()):
        assert json.loads(text)["ok"] is False
        assert "minio.example" in text and not any(secret in text for secret in NEVER), text
