"""Inference-log records and their Parquet form: one row per instance a request gave the model.

`Entry` is what the predict endpoint queues (cheap to build on the request path); `to_table` turns
a batch of them into an Arrow table in the writer thread (`model_wrapper.predict.inference_log`). Fields a
contract marks `log: false` never get a column: `Layout` leaves them out once, for every record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from numpy.typing import NDArray

from model_wrapper.contract.spec import Contract, FieldType

if TYPE_CHECKING:  # pyarrow is imported by the writer thread, once logging is on: a fifth of a second of start-up
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

    @classmethod
    def of(cls, model: str, version: str, contract: Contract, columns: Sequence[str]) -> Layout:
        kept = [(i, name) for i, name in enumerate(columns) if contract.inputs[name].log]
        return cls(model, version, tuple(i for i, _ in kept), tuple(f"{INPUT}{name}" for _, name in kept),
                   tuple(contract.inputs[name].type for _, name in kept),
                   all(contract.inputs[name].type == FieldType.number for name in columns))


def day_of(entry: Entry) -> str:
    return dt.datetime.fromtimestamp(entry.at, dt.UTC).strftime("%Y-%m-%d")


def to_table(entries: Sequence[Entry], layout: Layout) -> pa.Table:
    """The entries as one Arrow table: one row per instance (one row, without inputs, for a request
    whose body did not parse). Built column by column with C loops (zip, numpy, Arrow's take): the
    writer thread shares the interpreter with the event loop, so its Python work is kept per request,
    not per value."""
    import pyarrow as pa

    counts = np.array([len(e.rows) if e.rows is not None else 1 for e in entries], dtype=np.int64)
    owner = pa.array(np.repeat(np.arange(len(entries)), counts))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    parsed = np.repeat([e.rows is not None for e in entries], counts)
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([e.request_id for e in entries], pa.string()).take(owner),
        "timestamp": pa.array([int(e.at * 1000) for e in entries], pa.timestamp("ms", tz="UTC")).take(owner),
        "model": pa.repeat(pa.scalar(layout.model), len(owner)),
        "version": pa.repeat(pa.scalar(layout.version), len(owner)),
        "route": pa.array([e.route for e in entries], pa.string()).take(owner),
        "status": pa.array([e.status for e in entries], pa.int16()).take(owner),
        "latency_ms": pa.array([e.latency_ms for e in entries], pa.float64()).take(owner),
        "instance": pa.array(np.arange(len(owner)) - starts, pa.int32(), mask=~parsed),
        "error": pa.array([e.error for e in entries], pa.string()).take(owner),
    }
    columns.update(_inputs(entries, layout))
    columns.update(_outputs(entries, counts))
    return pa.table(columns)


def _inputs(entries: Sequence[Entry], layout: Layout) -> dict[str, pa.Array]:
    import pyarrow as pa

    if layout.numbers and all(entry.rows is not None for entry in entries):
        try:
            matrix = np.concatenate([np.asarray(entry.rows, dtype=np.float64) for entry in entries])
            return {name: pa.array(matrix[:, index]) for name, index in zip(layout.names, layout.indices, strict=True)}
        except (TypeError, ValueError):  # an optional field left out (None): the general way below
            pass

    arrow_types = {FieldType.number: pa.float64(), FieldType.integer: pa.int64(), FieldType.string: pa.string(),
                   FieldType.boolean: pa.bool_()}
    values: list[list[Any]] = [[] for _ in layout.indices]
    for entry in entries:
        if entry.rows is None:
            for column in values:
                column.append(None)
            continue
        transposed = list(zip(*entry.rows, strict=True))
        for column, index in zip(values, layout.indices, strict=True):
            column.extend(transposed[index])
    return {name: pa.array(column, arrow_types[kind])
            for name, kind, column in zip(layout.names, layout.types, values, strict=True)}


def _outputs(entries: Sequence[Entry], counts: np.ndarray) -> dict[str, pa.Array]:
    """predictions always; probabilities and labels when some answer has them. A failed request's
    outputs are nulls."""
    columns = {}
    for key, name in (("predictions", "prediction"), ("probabilities", "probabilities"), ("labels", "label")):
        parts = [_part(e, key, n) for e, n in zip(entries, counts, strict=True)]
        if key == "predictions" or any(part is not None for part in parts):
            columns[f"{OUTPUT}{name}"] = _column(parts, counts)
    return columns


def _part(entry: Entry, key: str, count: int) -> Any:
    values = (entry.answer or {}).get(key)
    return values if values is not None and len(values) == count else None


def _column(parts: list[Any], counts: np.ndarray) -> pa.Array:
    """One output column from each request's part: numpy arrays joined as they are (a 2-D one, e.g.
    probabilities, as lists of its rows); anything else as Arrow infers it, or as JSON text."""
    import pyarrow as pa

    if all(isinstance(part, np.ndarray) and part.ndim in (1, 2) for part in parts) and \
            len({(part.dtype, part.shape[1:]) for part in parts}) == 1:
        joined = np.concatenate(parts)
        if joined.ndim == 1:
            return pa.array(joined)
        flat = pa.FixedSizeListArray.from_arrays(pa.array(joined.reshape(-1)), joined.shape[1])
        return flat.cast(pa.list_(flat.type.value_type))
    values: list[Any] = []
    for part, count in zip(parts, counts, strict=True):
        values.extend(_listed(part) if part is not None else [None] * int(count))
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
