"""A model logged with a float32 example shows its examples as people wrote them (5.1), not as the
float64 widening MLflow saves (5.099999904632568): the same float32, a readable Swagger example."""

from __future__ import annotations

from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model
from sklearn.linear_model import LinearRegression

from model_wrapper.contract.signature import contract_from_signature, shortest_float32
from model_wrapper.loading.mlflow_loader import _input_example, signature_inputs


@pytest.mark.parametrize("example", [
    pd.DataFrame({"a": np.array([5.1, 4.9], dtype=np.float32), "b": np.array([3.5, 0.1 + 0.2], dtype=np.float64)}),
    np.array([[5.1, 0.1], [4.9, 3.5]], dtype=np.float32),
])
def test_a_float32_example_keeps_its_shortest_form_and_a_float64_one_is_untouched(
    tmp_path: Path, example: pd.DataFrame | np.ndarray
) -> None:
    path = tmp_path / "model"
    mlflow.sklearn.save_model(LinearRegression().fit(example, [1.0, 2.0]), path, input_example=example,
                              pip_requirements=["scikit-learn"])
    assert "5.099999904632568" in (path / "input_example.json").read_text()  # what MLflow itself saves
    mlmodel = Model.load(str(path))

    contract = contract_from_signature(signature_inputs(mlmodel) or [], _input_example(mlmodel, path))

    values = [list(row.values()) for row in contract.examples]
    assert values == [[5.1, 0.1], [4.9, 3.5]] if isinstance(example, np.ndarray) else [[5.1, 3.5], [4.9, 0.1 + 0.2]]


@pytest.mark.parametrize("value", [5.099999904632568, 0.1, 1e-45, 123456789.0, 3.4028234663852886e38, -2.5])
def test_the_shortest_form_is_the_same_float32(value: float) -> None:
    assert np.float32(shortest_float32(value)) == np.float32(value)
    assert len(repr(shortest_float32(value))) <= len(repr(value))
