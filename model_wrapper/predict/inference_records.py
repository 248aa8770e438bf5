"""Inference-log records and their Parquet form: one row per instance a request gave the model.

`Entry` is what the predict endpoint logs (cheap to build on the request path); it travels to the writer
process as a frame (`to_frame`, written by `Frames`; `read_frame` and `from_frame` there), where `to_table`
turns a batch of them into an Arrow table (`model_wrapper.predict.log_writer`). Fields a contract marks
`log: false` never get a column: `Layout` leaves them out once, for every record.
"""

from __future__ import annotations

import datetime as dt
import io
import pickle
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import orjson
from numpy.typing import NDArray

from model_wrapper.contract.spec import Contract, FieldType
from model_wrapper.predict.predictor import label_map

if TYPE_CHECKING:  # pyarrow is imported by the writer process only: the serving process imports this module too
    import pyarrow as pa

INPUT, OUTPUT = "input.", "output."


@dataclass(slots=True)
class Entry:
    """One logged predict request, as queued."""

    request_id: str
    at: float
    """Seconds since the epoch (UTC) when the request arrived."""
    route: str
    status: int
    latency_ms: float
    rows: list[tuple[Any, ...]] | NDArray[Any] | None
    answer: dict[str, Any] | None
    error: str | None = None
    """The error's code and the fields it names, never its message (which may quote a value)."""


def to_frame(entries: Sequence[Entry]) -> tuple[Any, ...]:
    """Entries as the serving process sends them, a flush's worth at a time: one column per field, with only
    the outputs the table holds (labels are looked up from the predictions, `Layout.labels`). Lists of plain
    values pickle at C speed, and an output's arrays go as one array (`_down_frame`): in a running wrapper,
    about half the time a tuple per entry with its arrays took (4 us an entry at one instance, from 7)."""
    answers = [entry.answer or _NO_ANSWER for entry in entries]
    return ([entry.request_id for entry in entries], [entry.at for entry in entries],
            [entry.route for entry in entries], [entry.status for entry in entries],
            [entry.latency_ms for entry in entries], [entry.error for entry in entries],
            [entry.answer is not None for entry in entries], _down_frame([entry.rows for entry in entries]),
            _down_frame([answer.get("predictions") for answer in answers]),
            _down_frame([answer.get("probabilities") for answer in answers]))


_NO_ANSWER: dict[str, Any] = {}


def from_frame(frame: tuple[Any, ...]) -> list[Entry]:
    """The entries `to_frame` sent, in the writer process."""
    ids, ats, routes, statuses, latencies, errors, answered, rows, predictions, probabilities = frame
    outputs = zip(answered, _up_frame(predictions), _up_frame(probabilities), strict=True)
    answers = [{"predictions": p, "probabilities": q} if a else None for a, p, q in outputs]
    return [Entry(*fields) for fields in zip(ids, ats, routes, statuses, latencies, _up_frame(rows), answers, errors,
                                               strict=True)]


def _down_frame(values: list[Any]) -> tuple[Any, ...]:
    """One field's values down a frame. Plain numpy arrays of one dtype and one shape but the first go as one
    array's bytes and each one's length: pickling arrays themselves names a function to rebuild them, which
    the pickler checks by importing its module, for every array. Values that are not arrays (a small
    request's rows are tuples) go as they are; None (no rows, no answer) stands for itself."""
    kept = [value for value in values if value is not None]
    present = None if len(kept) == len(values) else [value is not None for value in values]
    first = kept[0] if kept else None
    if type(first) is np.ndarray and first.ndim and first.dtype.itemsize and not first.dtype.hasobject \
            and first.dtype.fields is None:
        dtype, ndim, tail = first.dtype, first.ndim, first.shape[1:]
        if all(type(value) is np.ndarray and value.dtype == dtype and value.ndim == ndim and value.shape[1:] == tail
               for value in kept):
            return present, dtype.str, tail, [len(value) for value in kept], np.concatenate(kept).tobytes()
    return present, None, None, None, kept


def _up_frame(column: tuple[Any, ...]) -> list[Any]:
    """What `_down_frame` sent: the arrays read-only over their bytes, or the values; None where there was none."""
    present, dtype, tail, lengths, data = column
    if dtype is None:
        kept = data
    else:
        flat = np.frombuffer(data, np.dtype(dtype)).reshape((sum(lengths), *tail))  # not -1: a tail may hold a 0
        ends = np.cumsum(lengths).tolist()  # slices, not np.split: a quarter of its cost per piece
        kept = [flat[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    if present is None:
        return list(kept)
    values = iter(kept)
    return [next(values) if there else None for there in present]


_HEADER = struct.Struct("<II")
"""A frame's pickle's length, and the records it holds (counted as dropped if the writer cannot read it)."""
_NO_HEADER = bytes(_HEADER.size)


class UnreadableFrame(Exception):
    """A whole frame the writer cannot load (say, an answer of a class only the model's code has) or decode."""

    def __init__(self, records: int, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.records = records


class Frames:
    """The stream to the writer process, as the serving process builds it: each value a frame, a header (its
    pickle's length, the records it holds) and then its pickle (memo cleared, so that each stands alone).
    The writer reads a frame with two reads and one `pickle.loads` (`read_frame`): an unpickler reading the
    stream itself would peek, and so copy, the whole read buffer for every frame, which cost four times the
    rest of reading a record."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self._pickler = pickle.Pickler(self.buffer, protocol=pickle.HIGHEST_PROTOCOL)

    def add(self, value: Any, records: int = 0) -> int:
        """Append `value`'s frame and return where it ends; a value pickle cannot take (or a frame beyond 4 GiB)
        leaves the buffer as it was and is raised."""
        buffer = self.buffer
        start = buffer.tell()
        buffer.write(_NO_HEADER)
        try:
            self._pickler.dump(value)
            end = buffer.tell()
            header = _HEADER.pack(end - start - _HEADER.size, records)
        except BaseException:
            buffer.seek(start)
            buffer.truncate()
            raise
        finally:
            self._pickler.clear_memo()
        buffer.seek(start)
        buffer.write(header)
        buffer.seek(end)
        return end


def frame(value: Any, records: int = 0) -> bytes:
    """`value` as one frame on its own (the settings first, the drain's seconds last)."""
    frames = Frames()
    frames.add(value, records)
    return frames.buffer.getvalue()


def read_frame(stream: BinaryIO, decode: Callable[[Any], Any] = lambda value: value) -> Any:
    """The next frame's value, through `decode`. EOFError at the end of the stream; `pickle.UnpicklingError`
    when it ends inside a frame; `UnreadableFrame` (the stream goes on) when its pickle cannot be loaded or
    decoded here. The frames come from the process that started this one, through a pipe only the two hold."""
    head = stream.read(_HEADER.size)
    if not head:
        raise EOFError
    size, records = _HEADER.unpack(head) if len(head) == _HEADER.size else (-1, 0)
    data = stream.read(size) if size > 0 else b""
    if len(data) != size:
        raise pickle.UnpicklingError("the stream ended in the middle of a frame")
    try:
        return decode(pickle.loads(data))  # noqa: S301 - see above
    except Exception as e:
        raise UnreadableFrame(records, e) from e


@dataclass(frozen=True)
class Layout:
    """Which of the model's columns are logged, under which names and Arrow types."""

    model: str
    version: str
    indices: tuple[int, ...]
    names: tuple[str, ...]
    types: tuple[FieldType, ...]
    numbers: bool = False
    """Every column the model takes is a number: rows convert to one float array at C speed."""
    labels: Mapping[Any, str] = field(default_factory=dict)
    """The contract's label of each prediction (the predictor's own map), for the `output.label` column."""

    @classmethod
    def of(cls, model: str, version: str, contract: Contract, columns: Sequence[str],
           classes: list[Any] | None = None) -> Layout:
        kept = [(i, name) for i, name in enumerate(columns) if contract.inputs[name].log]
        return cls(model, version, tuple(i for i, _ in kept), tuple(f"{INPUT}{name}" for _, name in kept),
                   tuple(contract.inputs[name].type for _, name in kept),
                   all(contract.inputs[name].type == FieldType.number for name in columns),
                   label_map(contract.labels, classes) if contract.labels else {})


def split_by_day(batch: Sequence[Entry]) -> tuple[str, list[Entry], list[Entry]]:
    """The UTC day of the batch's first entry, its entries of that day, and the others (a batch that spans
    midnight). Compared as seconds against the day's bounds: one date formatting per batch, not per entry."""
    first = dt.datetime.fromtimestamp(batch[0].at, dt.UTC)
    start = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp()
    end = start + 86_400
    if all(start <= entry.at < end for entry in batch):
        return f"{first:%Y-%m-%d}", list(batch), []
    return (f"{first:%Y-%m-%d}", [entry for entry in batch if start <= entry.at < end],
            [entry for entry in batch if not start <= entry.at < end])


def to_table(entries: Sequence[Entry], layout: Layout) -> pa.Table:
    """The entries as one Arrow table: one row per instance (one row, without inputs, for a request
    whose body did not parse). Built column by column with C loops (zip, numpy, Arrow's take): the
    writer process's CPU is the pod's too, so its Python work is kept to one pass per request, none per
    value. A text that repeats down the column (the model, the version, and with
    several instances a request's id and route) is a dictionary array: `parquet_file` writes it as
    Parquet's dictionary pages without hashing a value or copying it once per row."""
    import pyarrow as pa

    ids, ats, routes, statuses, latencies, errors, rows, answers = zip(*[
        (e.request_id, e.at, e.route, e.status, e.latency_ms, e.error, e.rows, e.answer) for e in entries],
        strict=True)
    sizes = [len(r) if r is not None else 1 for r in rows]
    counts = np.array(sizes, dtype=np.int64)
    total = int(counts.sum())
    # A request's values repeat once per instance; with one instance each (the common small request)
    # there is nothing to repeat.
    owner = None if total == len(entries) else pa.array(np.repeat(np.arange(len(entries), dtype=np.int32), counts))

    def per_request(values: Sequence[Any] | NDArray[Any], kind: pa.DataType) -> pa.Array:
        array = pa.array(values, kind)
        if owner is None:
            return array
        if kind != pa.string():
            return array.take(owner)
        encoded = array.dictionary_encode()  # each distinct text once (a route repeats across requests)
        return pa.DictionaryArray.from_arrays(encoded.indices.take(owner), encoded.dictionary)

    def constant(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(total, np.int32)), pa.array([value]))

    parsed = np.repeat(np.array([r is not None for r in rows]), counts)
    columns: dict[str, pa.Array] = {
        "request_id": per_request(ids, pa.string()),
        "timestamp": per_request((np.array(ats) * 1000).astype(np.int64), pa.timestamp("ms", tz="UTC")),
        "model": constant(layout.model),
        "version": constant(layout.version),
        "route": per_request(routes, pa.string()),
        "status": per_request(statuses, pa.int16()),
        "latency_ms": per_request(latencies, pa.float64()),
        "instance": pa.array(np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts), pa.int32(),
                             mask=~parsed),
        "error": pa.array(errors, pa.string()).take(owner) if owner is not None else pa.array(errors, pa.string()),
    }
    columns.update(_inputs(rows, layout))
    columns.update(_outputs(answers, sizes, layout.labels))
    return pa.table(columns)


def parquet_file(table: pa.Table) -> bytes:
    """The table as one Parquet file, Snappy-compressed (Parquet's usual codec, read by every engine).
    Dictionary pages only for the columns built as dictionaries (`to_table`), and min/max statistics
    only for the columns that are not text (the timestamp's let a reader skip a file by time; a request
    id's would cost a comparison per value and serve no query). No Arrow schema is stored, so every
    reader (pandas, DuckDB, Spark) reads the texts as plain strings, not as categories."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = table.schema
    dictionaries = [field.name for field in fields if pa.types.is_dictionary(field.type)]
    numbers = [field.name for field in fields if field.name not in dictionaries and not pa.types.is_string(field.type)]
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="snappy", use_dictionary=dictionaries, write_statistics=numbers,
                   store_schema=False)
    return buffer.getvalue()


def _inputs(rows: Sequence[Any], layout: Layout) -> dict[str, pa.Array]:
    import pyarrow as pa

    if layout.numbers and all(r is not None for r in rows):
        # numpy turns an optional field left out (None) into NaN, which no JSON body can hold: so each
        # NaN is written back as the null it was (`from_pandas`).
        matrix = _number_matrix(rows)
        return {name: pa.array(matrix[:, index], from_pandas=True)
                for name, index in zip(layout.names, layout.indices, strict=True)}

    arrow_types = {FieldType.number: pa.float64(), FieldType.integer: pa.int64(), FieldType.string: pa.string(),
                   FieldType.boolean: pa.bool_()}
    values: list[list[Any]] = [[] for _ in layout.indices]
    for instances in rows:
        if instances is None:
            for column in values:
                column.append(None)
            continue
        transposed = list(zip(*instances, strict=True))
        for column, index in zip(values, layout.indices, strict=True):
            column.extend(transposed[index])
    return {name: pa.array(column, arrow_types[kind])
            for name, kind, column in zip(layout.names, layout.types, values, strict=True)}


def _number_matrix(rows: Sequence[Any]) -> NDArray[np.float64]:
    """All instances as one float matrix: the tuples of every request in one numpy call (not one per
    request), joined with the arrays the numeric batch gave."""
    if not any(isinstance(r, np.ndarray) for r in rows):
        return np.array([instance for instances in rows for instance in instances], dtype=np.float64)
    return np.concatenate([np.asarray(r, dtype=np.float64) for r in rows])


def _outputs(answers: Sequence[dict[str, Any] | None], sizes: list[int],
             labels: Mapping[Any, str]) -> dict[str, pa.Array]:
    """predictions always; probabilities when some answer has them, and labels when the contract names
    them. A failed request's outputs are nulls, as are outputs whose length is not the request's
    instance count."""
    columns = {}
    for key, name in (("predictions", "prediction"), ("probabilities", "probabilities")):
        parts = [value if answer is not None and (value := answer.get(key)) is not None and _length(value) == size
                 else None for answer, size in zip(answers, sizes, strict=True)]
        if key == "predictions" or any(part is not None for part in parts):
            columns[f"{OUTPUT}{name}"] = _column(parts, sizes)
    if labels and any(answer is not None for answer in answers):
        columns[f"{OUTPUT}label"] = _labels(columns[f"{OUTPUT}prediction"], labels)
    return columns


def _length(value: Any) -> int | None:
    """How many values an output holds; None for one that is not a sequence (a number, a 0-d array)."""
    try:
        return len(value)
    except TypeError:
        return None


def _labels(predictions: pa.Array, labels: Mapping[Any, str]) -> pa.Array:
    """Each prediction's label, as the predictor gave it, looked up once per distinct prediction rather
    than converted once per instance from the answers' Python strings: a dictionary array (written as
    Parquet's dictionary pages) of the predictions' codes over their labels."""
    import pyarrow as pa

    if pa.types.is_nested(predictions.type):  # several values an instance: no one label names them
        return pa.nulls(len(predictions), pa.string())
    encoded = predictions.dictionary_encode()
    names = [labels.get(value) for value in encoded.dictionary.to_pylist()]
    return pa.DictionaryArray.from_arrays(encoded.indices, pa.array(names, pa.string()))


def _column(parts: list[Any], sizes: list[int]) -> pa.Array:
    """One output column from each request's part: numpy arrays joined as they are (a 2-D one, e.g.
    probabilities, as lists of its rows); anything else as Arrow infers it, or as JSON text."""
    import pyarrow as pa

    kinds = {(part.dtype, part.shape[1:]) if isinstance(part, np.ndarray) and part.ndim in (1, 2) else None
             for part in parts}
    if len(kinds) == 1 and None not in kinds:
        joined = np.concatenate(parts)
        try:
            if joined.ndim == 1:
                return pa.array(joined)
            flat = pa.FixedSizeListArray.from_arrays(pa.array(joined.reshape(-1)), joined.shape[1])
            return flat.cast(pa.list_(flat.type.value_type))
        except (pa.ArrowException, TypeError, ValueError):  # a dtype Arrow has no type for (records): as values
            pass
    values: list[Any] = []
    for part, size in zip(parts, sizes, strict=True):
        values.extend(_listed(part) if part is not None else [None] * size)
    return _values(values)


def _listed(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _values(values: list[Any]) -> pa.Array:
    """Predictions as Arrow infers them (numbers, strings, lists); anything mixed or nested as JSON text."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        return pa.array([None if v is None else orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY,
                                                             default=str).decode() for v in values], pa.string())
