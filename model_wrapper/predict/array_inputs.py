"""Which scikit-learn models take the native-array fast path, in which column order and dtype.

Pure helpers shared by `model_wrapper.loading.mlflow_loader` (through MLflow) and `model_wrapper.loading.sklearn_loader`
(without it), so that both choose the same backend for the same model.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from model_wrapper.contract.spec import Contract
from model_wrapper.errors import LoadFailure

# Signature column types the array fast path reproduces exactly (float32 columns would not).
FAST_SIGNATURE_TYPES = {"double", "long", "integer"}


def quiet_feature_name_warning() -> None:
    # The wrapper builds arrays in the fitted column order itself, so sklearn's warning that an
    # array has no column names says nothing here.
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)


def column_order(contract: Contract, signature: list[dict[str, Any]] | None, estimator: Any, *,
                 positional: bool = False) -> list[str]:
    """The order the model takes its inputs in. `positional`: a tensor, whose columns are the
    contract's inputs in the order written (or the fitted columns, when the contract names them)."""
    fitted = list(getattr(estimator, "feature_names_in_", []))
    if fitted and set(fitted) == set(contract.inputs):
        return [str(name) for name in fitted]
    if positional:
        return list(contract.inputs)
    if fitted:
        missing = sorted(set(fitted) - set(contract.inputs))
        extra = sorted(set(contract.inputs) - set(fitted))
        raise LoadFailure(f"the contract's inputs differ from the columns the model was trained on: "
                          f"missing {missing}, not used by the model {extra}")
    order = [str(column["name"]) for column in signature or [] if column.get("name") in contract.inputs]
    return order + [name for name in contract.inputs if name not in order]


def array_safe(contract: Contract, signature: list[dict[str, Any]] | None, columns: list[str]) -> bool:
    specs = [contract.inputs[name] for name in columns]
    if not all(spec.required and spec.type.value in ("number", "integer") for spec in specs):
        return False
    return signature is None or all(column.get("type") in FAST_SIGNATURE_TYPES for column in signature)


def array_dtype(contract: Contract, signature: list[dict[str, Any]] | None) -> type[Any]:
    # Pyfunc hands scikit-learn an int64 frame only when every column is an integer one.
    if signature:
        kinds = {column.get("type") for column in signature}
    else:
        kinds = {spec.type.value for spec in contract.inputs.values()}
    return np.int64 if kinds <= {"long", "integer"} else np.float64
