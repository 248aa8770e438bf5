"""The inference log of a real wrapper process, read back from moto's S3 server: what a record holds,
the request id echoed, a `log: false` field never written, S3 failing for a minute failing no request,
SIGTERM under load losing no accepted record, and a writer process that died started again. The
contract's `logging` section is parsed strictly."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from devstack.models import IRIS_CONTRACT, LoggedModel
from devstack.servers import LOCAL_AWS_ENV, LocalMlflow, LocalS3
from model_wrapper.contract.spec import ContractError, parse_contract
from model_wrapper.predict.inference_log import RESTART_SECONDS
from model_wrapper.predict.log_writer import RETRY_FIRST_SECONDS
from tests.faults.proxy import FaultProxy
from tests.wrapper.conftest import Served, serve, unique
from tests.wrapper.models import log_iris_model

SECRET = "sepal_width"
CONTRACT = IRIS_CONTRACT.replace("example: 3.5}", "example: 3.5, log: false}")
INSTANCE = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
WAIT_SECONDS = 60
OUTAGE_SECONDS = 60
README = Path(__file__).resolve().parents[2] / "README.md"
serving = contextlib.contextmanager(serve)


@pytest.fixture(scope="module")
def private_model(mlflow_server: LocalMlflow) -> LoggedModel:
    return log_iris_model(unique("log-iris"), contract=CONTRACT)


def _log_env(prefix: str, **extra: str) -> dict[str, str]:
    return {"INFERENCE_LOG_SAMPLE": "1", "INFERENCE_LOG_PREFIX": prefix, "INFERENCE_LOG_BATCH_SECONDS": "0.3",
            **extra}


def _s3(s3: LocalS3) -> object:
    return boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


def _files(s3: LocalS3, prefix: str) -> dict[str, bytes]:
    client = _s3(s3)
    listing = client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/")  # type: ignore[attr-defined]
    return {item["Key"]: client.get_object(Bucket=s3.bucket, Key=item["Key"])["Body"].read()  # type: ignore[attr-defined]
            for item in listing.get("Contents", [])}


def _records(s3: LocalS3, prefix: str) -> pd.DataFrame:
    tables = [pq.read_table(io.BytesIO(body)).to_pandas() for body in _files(s3, prefix).values()]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({"request_id": []})


def _wait_for(s3: LocalS3, prefix: str, request_ids: set[str]) -> pd.DataFrame:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        records = _records(s3, prefix)
        if request_ids <= set(records["request_id"]):
            return records
        time.sleep(0.2)
    missing = request_ids - set(_records(s3, prefix)["request_id"])
    raise AssertionError(f"{len(missing)} of {len(request_ids)} records never arrived")


@pytest.fixture
def prefix() -> str:
    return f"inference-log-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def logged(private_model: LoggedModel, mlflow_server: LocalMlflow, prefix: str) -> Iterator[Served]:
    yield from serve(private_model, mlflow_server, **_log_env(prefix))


def test_a_logged_request_lands_as_parquet_with_what_the_model_saw_and_answered(
        logged: Served, s3: LocalS3, prefix: str) -> None:
    second = {**INSTANCE, "petal_length": 1.4, "petal_width": 0.2}
    response = logged.post("predict", {"instances": [INSTANCE, second]}, headers={"X-Request-ID": "caller-42"})
    generated = logged.post("predict", {"instances": [INSTANCE]}).headers["x-request-id"]

    records = _wait_for(s3, prefix, {"caller-42", generated})

    assert response.headers["x-request-id"] == "caller-42"
    mine = records[records.request_id == "caller-42"].sort_values("instance")
    assert list(mine["input.petal_length"]) == [5.1, 1.4]
    assert list(mine["output.prediction"]) == response.json()["predictions"]
    assert list(mine["output.label"]) == response.json()["labels"]
    assert set(mine.status) == {200} and set(mine.route) == {"predict"} and (mine.latency_ms > 0).all()
    assert set(mine.model) == {logged.model.name} and set(mine.version) == {logged.model.version}
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    assert all(key.startswith(f"{prefix}/{logged.slug}/{logged.model.version}/date={today}/")
               and key.endswith(".parquet") for key in _files(s3, prefix))



def test_a_v2_infer_request_is_logged_as_predict_s_would_be_with_its_route(
        logged: Served, s3: LocalS3, prefix: str) -> None:
    second = {**INSTANCE, "petal_length": 1.4, "petal_width": 0.2}
    inputs = [{"name": name, "datatype": "FP64", "shape": [2], "data": [INSTANCE[name], second[name]]}
              for name in INSTANCE]
    inferred = logged.post(f"v2/models/{logged.slug}/infer", {"inputs": inputs}, headers={"X-Request-ID": "v2-caller"})
    predicted = logged.post("predict", {"instances": [INSTANCE, second]})
    assert inferred.status_code == 200, inferred.text

    records = _wait_for(s3, prefix, {"v2-caller", predicted.headers["x-request-id"]})

    assert inferred.headers["x-request-id"] == "v2-caller"
    v2 = records[records.request_id == "v2-caller"].sort_values("instance")
    same = records[records.request_id == predicted.headers["x-request-id"]].sort_values("instance")
    assert set(v2.route) == {"v2 infer"} and set(same.route) == {"predict"}
    assert list(v2["output.prediction"]) == inferred.json()["outputs"][0]["data"] == predicted.json()["predictions"]
    columns = [column for column in records.columns if column.startswith(("input.", "output."))]
    assert v2[columns].reset_index(drop=True).equals(same[columns].reset_index(drop=True))
    assert f"input.{SECRET}" not in records.columns


def test_the_readme_s_three_lines_read_the_log_with_pandas(logged: Served, s3: LocalS3, prefix: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ids = {logged.post("predict", {"instances": [INSTANCE] * 3}).headers["x-request-id"] for _ in range(4)}
    _wait_for(s3, prefix, ids)
    # The one python block that reads the log (the README has others): no fence inside the match.
    block = re.search(r"```python\n((?:(?!```).)*?pyarrow\.fs(?:(?!```).)*)```", README.read_text(), re.S)
    assert block is not None
    for key, value in {**LOCAL_AWS_ENV, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url}.items():
        monkeypatch.setenv(key, value)
    names: dict[str, object] = {}

    exec(block.group(1).replace("models/inference-log/iris/3/",  # the README's own code
                                f"{s3.bucket}/{prefix}/{logged.slug}/{logged.model.version}/"), names)

    log = names["log"]
    assert isinstance(log, pd.DataFrame) and set(log.request_id) == ids and len(log) == 12
    assert set(log.date.astype(str)) == {pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")}


def test_a_field_marked_log_false_never_appears_in_any_file_not_even_an_error_record(
        logged: Served, s3: LocalS3, prefix: str) -> None:
    ok = logged.post("predict", {"instances": [{**INSTANCE, SECRET: 3.1415}]})
    refused = logged.post("predict", {"instances": [{**INSTANCE, SECRET: -2.7182}]})

    records = _wait_for(s3, prefix, {ok.headers["x-request-id"], refused.headers["x-request-id"]})

    assert (ok.status_code, refused.status_code) == (200, 422)
    assert refused.json()["error"]["details"][0]["field"].endswith(SECRET), "the 422 itself still names it"
    for key, body in _files(s3, prefix).items():
        assert SECRET.encode() not in body, key
        table = pq.read_table(io.BytesIO(body))
        assert not {3.1415, -2.7182} & {v for c in table.columns for v in c.to_pylist() if isinstance(v, float)}
    error = records[records.request_id == refused.headers["x-request-id"]].iloc[0]
    assert (error.status, error.error) == (422, "invalid_input")


def test_s3_answering_503_for_a_minute_fails_no_request_and_the_records_arrive_after(
        private_model: LoggedModel, mlflow_server: LocalMlflow, s3: LocalS3, prefix: str) -> None:
    # A minute, as the issue asks: long enough for the writer's pause to reach its ceiling
    # (RETRY_MAX_SECONDS) and for batches to pile up behind the first failed one.
    proxy = FaultProxy(s3.endpoint_url).start()
    outage = proxy.fail(rf"^PUT /{s3.bucket}/{prefix}/", 503)
    try:
        with serving(private_model, mlflow_server, MLFLOW_S3_ENDPOINT_URL=proxy.url, **_log_env(prefix)) as served:
            answers = []
            ends = time.monotonic() + OUTAGE_SECONDS
            while time.monotonic() < ends:
                answers.append(served.post("predict", {"instances": [INSTANCE]}))
                time.sleep(0.25)
            tries = _metric(served, "model_wrapper_inference_log_write_errors_total")
            proxy.clear()

            _wait_for(s3, prefix, {answer.headers["x-request-id"] for answer in answers})

            assert {answer.status_code for answer in answers} == {200}
            assert len(answers) > 100
            # It kept trying through the minute, and paused between tries instead of hammering S3.
            assert 5 <= tries < OUTAGE_SECONDS / RETRY_FIRST_SECONDS
            assert len(outage.hits) >= tries  # each try reached S3 (boto3 retries within one)
            assert _metric(served, "model_wrapper_inference_log_records_total", 'outcome="dropped"') == 0
    finally:
        proxy.stop()


def test_sigterm_under_load_loses_no_record_the_wrapper_accepted(
        private_model: LoggedModel, mlflow_server: LocalMlflow, s3: LocalS3, prefix: str) -> None:
    # A long batch time: at SIGTERM every record is still queued, only the flush can write it.
    with serving(private_model, mlflow_server, **_log_env(prefix, INFERENCE_LOG_BATCH_SECONDS="600")) as served:
        accepted: list[str] = []
        stop = threading.Event()
        senders = [threading.Thread(target=_send_until, args=(served.base, stop, accepted)) for _ in range(4)]
        for sender in senders:
            sender.start()
        _wait_until(lambda: len(accepted) >= 200)
        process = served.wrapper.process
        assert process is not None
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(60) == 128 + signal.SIGTERM, served.wrapper.log()  # the exit code says which signal
        stop.set()
        for sender in senders:
            sender.join()

        records = _wait_for(s3, prefix, set(accepted))

        assert len(set(records.request_id)) == len(accepted) > 200


def test_a_writer_process_that_dies_is_started_again_and_fails_no_request(
        logged: Served, s3: LocalS3, prefix: str) -> None:
    process = logged.wrapper.process
    assert process is not None
    first = logged.post("predict", {"instances": [INSTANCE]}).headers["x-request-id"]
    _wait_for(s3, prefix, {first})
    writer = _writer_of(process.pid)

    os.kill(writer, signal.SIGKILL)
    answers = []
    ends = time.monotonic() + RESTART_SECONDS + 2  # whatever the restart's pause, the requests span it
    while time.monotonic() < ends:
        answers.append(logged.post("predict", {"instances": [INSTANCE]}))
        time.sleep(0.05)
    later = logged.post("predict", {"instances": [INSTANCE]}).headers["x-request-id"]

    _wait_for(s3, prefix, {later})
    assert {answer.status_code for answer in answers} == {200}
    assert _writer_of(process.pid) != writer
    assert "the inference log writer is gone" in logged.wrapper.log()


def _writer_of(pid: int) -> int:
    """The wrapper's one child process, its inference-log writer."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_the_logging_section_is_parsed_strictly_with_the_bad_key_named() -> None:
    with pytest.raises(ContractError, match=r"logging\.rate: unknown key"):
        parse_contract((IRIS_CONTRACT + "logging: {rate: 0.1}\n").encode())
    with pytest.raises(ContractError, match=r"logging\.sample"):
        parse_contract((IRIS_CONTRACT + "logging: {sample: 1.5}\n").encode())
    with pytest.raises(ContractError, match=r"petal_width\.log"):
        parse_contract(IRIS_CONTRACT.replace("example: 0.2}", "example: 0.2, log: maybe}").encode())
    assert parse_contract((IRIS_CONTRACT + "logging: {sample: 0.25}\n").encode()).logging.sample == 0.25  # type: ignore[union-attr]


def _send_until(base: str, stop: threading.Event, accepted: list[str]) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            try:
                answer = client.post(base + "predict", json={"instances": [INSTANCE]})
            except httpx.HTTPError:
                return  # the server stopped listening: nothing more is accepted
            if answer.status_code == 200:
                accepted.append(answer.headers["x-request-id"])


def _wait_until(condition: object, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _metric(served: Served, name: str, having: str = "") -> float:
    text = served.client.get(served.base.replace(f"/{served.slug}/api/", "/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and having in line)
