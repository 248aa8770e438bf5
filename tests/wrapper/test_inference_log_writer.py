"""The inference log's writer in-process, behind its own seam (the Sink): the records the serving side
sends are the ones it writes; a full queue drops and counts
records without blocking the caller, and a close whose uploads keep failing gives up at its deadline,
counting what it could not write; the Arrow table holds what a row-by-row build of the same records
would. The real S3 cases are in test_inference_log.py."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from devstack.models import IRIS_CONTRACT, IRIS_FEATURES
from model_wrapper.config.settings import load_settings
from model_wrapper.contract.spec import parse_contract
from model_wrapper.predict.inference_log import InferenceLog
from model_wrapper.predict.inference_records import (
    Entry,
    Layout,
    frame,
    from_frame,
    parquet_file,
    read_frame,
    to_frame,
    to_table,
)
from model_wrapper.predict.log_writer import LogWriter, serve_frames
from model_wrapper.predict.predictor import LoadedModel

ROW = (5.1, 3.5, 1.4, 0.2)


@dataclass
class Counts:
    written: int = 0
    dropped: int = 0
    errors: int = 0

    def log_written(self, records: int) -> None:
        self.written += records

    def log_dropped(self, records: int) -> None:
        self.dropped += records

    def log_write_error(self) -> None:
        self.errors += 1


@dataclass
class Sink:
    opened: threading.Event = field(default_factory=threading.Event)
    failing: bool = False
    files: list[bytes] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def put(self, bucket: str, key: str, body: bytes) -> None:
        if self.failing:
            raise ConnectionError("S3 is down")
        self.opened.wait(30)
        self.files.append(body)
        self.keys.append(key)


@dataclass
class Backend:
    columns: list[str] = field(default_factory=lambda: list(IRIS_FEATURES))
    classes: list[Any] | None = field(default_factory=lambda: [0, 1, 2])


def _log(sink: Sink, **settings: str) -> tuple[LogWriter, Counts]:
    counts = Counts()
    return LogWriter(_settings(**settings), _layout(), sink=lambda: sink, bucket=lambda: "models",
                     counters=counts), counts


def _entry(number: int, at: float | None = None) -> Entry:
    return Entry(f"r{number}", time.time() if at is None else at, "predict", 200, 1.0, [ROW],
                 {"predictions": [0], "labels": ["setosa"]})


def test_a_full_queue_drops_and_counts_records_without_blocking_the_caller() -> None:
    sink = Sink()
    log, counts = _log(sink, INFERENCE_LOG_QUEUE="2", INFERENCE_LOG_BATCH_RECORDS="1")

    for number in range(10):  # the sink is blocked all along: an add that waited would never return
        log.add(_entry(number))
        time.sleep(0.01)

    assert 7 <= counts.dropped <= 8  # the queue holds 2, the blocked writer at most 1 more
    sink.opened.set()
    log.close(10)
    assert counts.written == 10 - counts.dropped == sum(pq.read_table(io.BytesIO(f)).num_rows for f in sink.files)


def test_a_batch_that_cannot_become_a_table_is_dropped_and_counted_once_and_later_batches_are_written() -> None:
    # A conversion fails the same way every time: retrying it would hold the queue until the drain.
    sink = Sink()
    sink.opened.set()
    log, counts = _log(sink, INFERENCE_LOG_BATCH_RECORDS="2")
    broken = Entry("bad", time.time(), "predict", 200, 1.0, [(1.0, 2.0)], {"predictions": [0]})  # 2 of 4 columns

    for entry in (_entry(0), broken, _entry(2), _entry(3)):
        log.add(entry)
    log.close(10)

    assert (counts.dropped, counts.written, counts.errors) == (2, 2, 0)
    assert [pq.read_table(io.BytesIO(f)).column("request_id").to_pylist() for f in sink.files] == [["r2", "r3"]]


def test_a_batch_that_spans_midnight_utc_is_written_as_one_file_per_day() -> None:
    sink = Sink()
    sink.opened.set()
    log, counts = _log(sink, INFERENCE_LOG_BATCH_SECONDS="600")
    midnight = datetime(2026, 12, 7, tzinfo=UTC).timestamp()
    # Requests finish out of order: an entry's time is when it arrived, so the days interleave.
    for number, at in enumerate([midnight - 0.2, midnight + 0.1, midnight - 0.001, midnight, midnight + 5]):
        log.add(_entry(number, at))

    log.close(10)

    days = {key.split("date=")[1].split("/")[0]: pq.read_table(io.BytesIO(body)).column("request_id").to_pylist()
            for key, body in zip(sink.keys, sink.files, strict=True)}
    assert days == {"2026-12-06": ["r0", "r2"], "2026-12-07": ["r1", "r3", "r4"]} and counts.written == 5


def test_records_whose_upload_keeps_failing_count_against_the_bound_so_an_outage_holds_no_more_than_the_queue() -> None:
    log, counts = _log(Sink(failing=True), INFERENCE_LOG_QUEUE="5", INFERENCE_LOG_BATCH_RECORDS="2",
                       INFERENCE_LOG_BATCH_SECONDS="600")
    for number in range(20):  # the writer takes every full batch off the queue, and cannot write it
        log.add(_entry(number))
        time.sleep(0.02)

    assert counts.dropped >= 15 and counts.written == 0  # at most 5 held, in the queue and the unwritten batches
    log.close(0.5)
    assert counts.dropped == 20


def test_a_close_whose_uploads_keep_failing_gives_up_at_its_deadline_and_counts_the_loss() -> None:
    log, counts = _log(Sink(failing=True), INFERENCE_LOG_BATCH_SECONDS="600")
    for number in range(5):
        log.add(_entry(number))

    log.close(1.0)

    assert (counts.written, counts.dropped) == (0, 5) and counts.errors >= 1  # given up, not still trying


def test_the_table_holds_each_instance_as_a_row_by_row_build_of_the_same_records_would() -> None:
    # Requests of every shape in one batch: tuples (the schema's), arrays (the numeric batch's), a
    # body that did not parse, an optional field left out, answers with and without probabilities.
    # The table is built from the records as the writer process gets them: pickled as frames.
    layout = _layout("7")
    answer = {"predictions": np.array([2, 0]), "probabilities": np.array([[0.1, 0.2, 0.7], [1.0, 0.0, 0.0]]),
              "labels": ["virginica", "setosa"]}
    entries = [Entry("a", 1_700_000_000.1239, "predict", 200, 1.5, [ROW, (6.0, None, 4.0, 1.0)], answer),
               Entry("b", 1_700_000_001.0, "predict", 422, 0.2, None, None, "invalid_input"),
               Entry("c", 1_700_000_002.5, "predict", 200, 0.7, np.array([ROW]),
                     {"predictions": np.array([1]), "labels": ["versicolor"]}),
               Entry("d", 1_700_000_003.0, "predict", 500, 3.0, [ROW], None, "model_fault")]

    table = to_table(from_frame(read_frame(io.BytesIO(frame(to_frame(entries))))), layout)

    expected = []
    for entry in entries:
        answer_of = entry.answer or {}
        for instance, row in enumerate(entry.rows if entry.rows is not None else [None]):
            values = list(row) if row is not None else [None] * len(IRIS_FEATURES)
            expected.append({
                "request_id": entry.request_id, "timestamp": int(entry.at * 1000), "model": "iris", "version": "7",
                "route": entry.route, "status": entry.status, "latency_ms": entry.latency_ms,
                "instance": instance if row is not None else None, "error": entry.error,
                **{f"input.{name}": value for name, value in zip(IRIS_FEATURES, values, strict=True)},
                **{f"output.{name}": _item(answer_of, key, instance)
                   for key, name in (("predictions", "prediction"), ("probabilities", "probabilities"),
                                     ("labels", "label"))}})
    assert table.to_pylist() == pa.Table.from_pylist(expected, schema=table.schema).to_pylist()
    assert table.column("input.sepal_width").null_count == 2  # left out, and not parsed: null, never NaN
    assert to_table(entries[:1], layout).column("input.sepal_width").null_count == 1  # all parsed: numpy's way
    _read_back_as_plain_columns(table)


def test_the_records_the_serving_side_sends_are_the_ones_the_writer_process_writes(tmp_path: Path) -> None:
    # The serving side's writer is `cat`: its stdin, the stream a writer process gets, is kept in a file
    # and then read by the writer's own loop. Records added on an event loop (sent every 100 and, the
    # last 50, by its timer) and off one (sent at once); then the drain's seconds.
    stream = tmp_path / "frames"
    log = InferenceLog(_settings(INFERENCE_LOG_BATCH_RECORDS="100000"), writer=["sh", "-c", f'cat > "{stream}"'])
    log.attach(_model())
    answer = {"predictions": np.array([2, 0]), "probabilities": np.array([[0.1, 0.2, 0.7], [1.0, 0.0, 0.0]]),
              "labels": ["virginica", "setosa"]}
    entries = [Entry(f"r{n}", 1_700_000_000.0 + n, "predict", 200, 1.0,
                     np.array([ROW, ROW]) if n % 2 else [ROW, (6.0, None, 4.0, 1.0)], answer) for n in range(3000)]

    async def add_on_the_loop() -> None:
        for entry in entries[:2550]:
            log.add(entry)
        await asyncio.sleep(0.5)

    asyncio.run(add_on_the_loop())
    for entry in entries[2550:]:
        log.add(entry)
    log.close(10)
    sink, report = _written_by_the_writer(stream)

    written = pa.concat_tables([pq.read_table(io.BytesIO(body)) for body in sink.files])
    layout = _layout()
    assert written.to_pylist() == pq.read_table(io.BytesIO(parquet_file(to_table(entries, layout)))).to_pylist()
    # In one file or several: the records are of 2023, so a batch is due as soon as the writer looks.
    assert sum(int(line.removeprefix("written ")) for line in report.splitlines()) == 3000


def test_a_stream_cut_in_the_middle_of_a_record_still_gets_the_records_before_it_written() -> None:
    # The serving process died mid-write, or its drain ended mid-frame; and nobody reads the counts any more.
    settings = _settings()
    layout = _layout()
    stream = frame((settings, layout)) + b"".join(frame(to_frame([_entry(n)])) for n in range(3))
    sink = Sink()
    sink.opened.set()

    serve_frames(io.BytesIO(stream[:-20]), _Gone(), sink=lambda settings: sink, bucket=lambda settings: "models")

    assert pq.read_table(io.BytesIO(sink.files[0])).column("request_id").to_pylist() == ["r0", "r1"]


def test_a_record_pickle_cannot_take_is_dropped_and_counted_and_the_records_around_it_arrive(tmp_path: Path) -> None:
    # A pyfunc model may answer with any Python object; one that cannot be pickled must not cut the stream.
    stream = tmp_path / "frames"
    log = InferenceLog(_settings(), writer=["sh", "-c", f'cat > "{stream}"'])
    counts = Counts()
    log.counters = counts
    log.attach(_model())
    unpicklable = Entry("bad", time.time(), "predict", 200, 1.0, [ROW], {"predictions": [threading.Lock()]})

    async def add_in_one_flush() -> None:  # no await: the three are encoded together, at close
        for entry in (_entry(0), unpicklable, _entry(2)):
            log.add(entry)

    asyncio.run(add_in_one_flush())
    log.close(10)
    sink, _ = _written_by_the_writer(stream)

    assert pq.read_table(io.BytesIO(sink.files[0])).column("request_id").to_pylist() == ["r0", "r2"]
    assert counts.dropped == 1


def test_a_frame_the_writer_cannot_load_is_counted_and_the_frames_after_it_arrive(tmp_path: Path) -> None:
    # An answer of a class the serving process has and the writer cannot load (the model's own code).
    stream = tmp_path / "frames"
    log = InferenceLog(_settings(), writer=["sh", "-c", f'cat > "{stream}"'])
    log.attach(_model())
    unloadable = Entry("bad", time.time(), "predict", 200, 1.0, [ROW], {"predictions": [_Unloadable()]})

    for entry in (_entry(0), unloadable, _entry(2)):  # off an event loop: a frame each
        log.add(entry)
    log.close(10)
    sink, report = _written_by_the_writer(stream)

    assert pq.read_table(io.BytesIO(sink.files[0])).column("request_id").to_pylist() == ["r0", "r2"]
    assert report.splitlines() == ["dropped 1", "written 2"]


def test_a_frame_the_writer_cannot_take_apart_is_counted_and_the_frames_after_it_arrive() -> None:
    broken = list(to_frame([_entry(1), _entry(2)]))
    broken[0] = broken[0][:1]  # one request id for two entries
    stream = (frame((_settings(), _layout())) + frame(to_frame([_entry(0)]), 1) + frame(tuple(broken), 2)
              + frame(to_frame([_entry(3)]), 1))

    sink, report = _written_by_the_writer(stream)

    assert pq.read_table(io.BytesIO(sink.files[0])).column("request_id").to_pylist() == ["r0", "r3"]
    assert report.splitlines() == ["dropped 2", "written 2"]


def _written_by_the_writer(stream: Path | bytes) -> tuple[Sink, str]:
    """What the writer's own loop makes of a stream (the serving side's, kept by `cat`, or built here): its files
    and its counts."""
    sink, report = Sink(), io.StringIO()
    sink.opened.set()
    with stream.open("rb") if isinstance(stream, Path) else io.BytesIO(stream) as frames:
        serve_frames(frames, report, sink=lambda settings: sink, bucket=lambda settings: "models")
    return sink, report.getvalue()


class _Unloadable:
    def __reduce__(self) -> tuple[Any, ...]:
        return _cannot_load, ()


def _cannot_load() -> None:
    raise ModuleNotFoundError("No module named 'model_code'")


class _Gone(io.StringIO):
    """The writer's stdout once the serving process is gone."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_writer_that_cannot_start_drops_and_counts_records_and_fails_nothing() -> None:
    log = InferenceLog(_settings(), writer=["/nonexistent/log-writer"])
    counts = Counts()
    log.counters = counts

    log.attach(_model())
    log.add(_entry(1))
    log.close(1)

    assert counts.dropped == 1 and log.sample == 1.0


def test_records_the_writer_never_took_before_the_drain_ended_are_counted_as_dropped() -> None:
    log = InferenceLog(_settings(INFERENCE_LOG_QUEUE="100000"), writer=["sleep", "60"])  # a writer that never reads
    counts = Counts()
    log.counters = counts
    log.attach(_model())

    async def add() -> None:  # on an event loop: frames of a hundred records
        for number in range(40_000):  # more than the pipe holds (1 MiB)
            log.add(_entry(number))

    asyncio.run(add())
    started = time.monotonic()
    log.close(0.5)

    assert time.monotonic() - started < 5
    # The pipe's share went to a writer that never wrote it: not counted here. A frame cut by the drain is.
    assert 0 < counts.dropped < 40_000 and counts.dropped % 100 == 0


def _settings(**values: str) -> Any:
    return load_settings({"MODEL_NAME": "iris", "MODEL_VERSION": "1", "MODEL_SOURCE": "s3://models/iris",
                          "INFERENCE_LOG_SAMPLE": "1", **values})


def _model() -> Any:
    return LoadedModel(parse_contract(IRIS_CONTRACT.encode()), "test", Backend(), None)  # type: ignore[arg-type]


def _layout(version: str = "1") -> Layout:
    """The iris model's, as the serving side builds it for the writer (`InferenceLog.attach`)."""
    return Layout.of("iris", version, parse_contract(IRIS_CONTRACT.encode()), IRIS_FEATURES, [0, 1, 2])


def test_a_frame_keeps_every_kind_of_array_a_model_answers_alone_and_beside_others() -> None:
    # A frame sends an output's arrays as one when they share a dtype and a shape but the first, and each
    # as it is otherwise: every kind, alone, beside one of its kind and another length, beside another kind,
    # and around a request that got no answer.
    kinds = [np.array(["setosa", None], dtype=object), np.array([1.5, 2.5], dtype=np.float32),
             np.array([[1, 2], [3, 4]], dtype=np.int64).T, np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
             np.array(["x", "yz"]), np.float64(3.5), np.array(3.5), [0, 1], np.zeros((0, 3)), np.zeros((2, 0))]
    for kind in kinds:
        same = np.concatenate([kind, kind, kind]) if isinstance(kind, np.ndarray) and kind.ndim else kind
        for answers in ([kind], [kind, same], [kind, np.array([7.0])], [kind, None, same]):
            entries = [Entry(f"r{n}", 1.0, "predict", 200, 1.0, np.array([ROW]) if n % 2 else [ROW],
                             None if answer is None else {"predictions": answer, "probabilities": answer})
                       for n, answer in enumerate(answers)]

            got = from_frame(read_frame(io.BytesIO(frame(to_frame(entries)))))
            to_table(got, _layout())  # and the writer can write them

            for entry, back in zip(entries, got, strict=True):
                assert back.request_id == entry.request_id
                assert _same(back.rows, entry.rows)
                if entry.answer is None:
                    assert back.answer is None
                    continue
                assert back.answer is not None
                for output in ("predictions", "probabilities"):
                    assert _same(back.answer[output], entry.answer[output])


def _same(got: Any, sent: Any) -> bool:
    if isinstance(sent, np.ndarray | np.generic):
        return bool(got.dtype == sent.dtype and got.shape == sent.shape and got.tolist() == sent.tolist())
    return bool(got == sent)


def _read_back_as_plain_columns(table: pa.Table) -> None:
    """What a reader of the file gets: the same rows, texts as plain strings (not categories), and the
    types the columns were built with."""
    read = pq.read_table(io.BytesIO(parquet_file(table)))
    assert read.to_pylist() == table.to_pylist()
    assert [(f.name, f.type) for f in read.schema] == [
        (f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in table.schema]
    assert read.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert read.schema.field("status").type == pa.int16() and read.schema.field("model").type == pa.string()
    assert str(read.to_pandas()["request_id"].dtype) != "category"


def _item(answer: dict[str, Any], key: str, instance: int) -> Any:
    values = answer.get(key)
    if values is None:
        return None
    value = values[instance]
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value
