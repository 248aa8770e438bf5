"""The environment check: the model's logged environment (as MLflow itself writes it) against this runtime.

Pure once the files exist: the installed versions and the Python version are passed in, so each
case is a row; the files come from `mlflow.sklearn.save_model`, the real writer, where it can write them.
"""

from __future__ import annotations

import platform
from pathlib import Path

import mlflow.sklearn
import pytest
import sklearn
from sklearn.dummy import DummyClassifier

from model_wrapper.loading.environment import (
    Difference,
    EnvironmentCheck,
    check_environment,
    hint,
    logged_python_version,
    logged_requirements,
)

RUNTIME = {"scikit-learn": "1.9.1", "numpy": "2.4.6", "pandas": "3.1.1", "mlflow": "3.17.2", "cloudpickle": "3.1.1"}


def installed(name: str) -> str | None:
    return RUNTIME.get(name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model saved by MLflow with pins that differ from RUNTIME in decisive and harmless ways."""
    path = tmp_path_factory.mktemp("env") / "model"
    mlflow.sklearn.save_model(DummyClassifier().fit([[0], [1]], [0, 1]), path, serialization_format="pickle",
                              pip_requirements=["scikit-learn==1.6.1", "numpy>=1.26,<2", "pandas~=3.0",
                                                "cloudpickle==3.0.0", "lightgbm==4.6.0 ; python_version < '3'"])
    return path


def test_mlflow_writes_all_three_files_and_each_is_read(saved: Path) -> None:
    assert {"requirements.txt", "python_env.yaml", "conda.yaml"} <= {p.name for p in saved.iterdir()}
    names = [r.name for r in logged_requirements(saved)]
    assert names == ["mlflow", "scikit-learn", "numpy", "pandas", "cloudpickle"]  # lightgbm's marker is false here
    assert logged_python_version(saved) == platform.python_version()


def test_a_different_flavour_library_and_numpy_major_are_decisive_others_only_logged(saved: Path) -> None:
    check = check_environment(saved, ["sklearn", "python_function"], installed=installed, python="3.11.7")

    assert check.missing == ()
    assert sorted(d.package for d in check.mismatches) == ["numpy", "scikit-learn"]
    assert "scikit-learn: logged with 1.6.1, this runtime has 1.9.1" in check.warnings
    assert "numpy: logged with <2,>=1.26, this runtime has 2.4.6" in check.warnings
    assert [d.package for d in check.other] == ["cloudpickle"]  # pickled formats rarely hinge on it
    assert check.fatal("warn") is None
    refusal = check.fatal("fail") or ""
    assert "ENV_MISMATCH=fail" in refusal and 'EXTRA_REQUIREMENTS="scikit-learn==1.6.1 numpy<2,>=1.26"' in refusal


def test_a_missing_flavour_library_is_fatal_naming_the_version_and_both_fixes(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("mlflow==3.17.2\nlightgbm==4.6.0\nscikit-learn\n")

    check = check_environment(tmp_path, ["lightgbm", "python_function"], installed=installed, python="3.11.7")

    assert check.fatal("warn") == (
        "the model needs lightgbm 4.6.0, which this runtime does not have; serve it with a runtime image that "
        'has it (RUNTIME_IMAGES="lightgbm=<image>"), or build the wrapper image with '
        'EXTRA_REQUIREMENTS="lightgbm==4.6.0"')


def test_a_flavour_library_missing_without_any_requirements_file_is_still_named(tmp_path: Path) -> None:
    check = check_environment(tmp_path, ["xgboost"], installed=installed, python="3.11.7")
    assert [d.package for d in check.missing] == ["xgboost"]
    assert "the model needs xgboost, which this runtime does not have" in (check.fatal("warn") or "")


@pytest.mark.parametrize(("python_env", "conda", "expected"), [
    ("python: 3.9.18\nbuild_dependencies: [pip]\ndependencies: [-r requirements.txt]\n", None, "3.9.18"),
    (None, "dependencies:\n- python=3.10.4\n- pip:\n  - scikit-learn==1.9.1\n", "3.10.4"),
    ("python: 3.11.2\n", "dependencies: [python=3.9]\n", "3.11.2"),  # python_env.yaml wins, as in MLflow
    ("{unclosed: [\n", None, None),  # unreadable: no information, not a crash
])
def test_the_logged_python_comes_from_python_env_then_conda(
    tmp_path: Path, python_env: str | None, conda: str | None, expected: str | None
) -> None:
    for name, text in (("python_env.yaml", python_env), ("conda.yaml", conda)):
        if text is not None:
            (tmp_path / name).write_text(text)
    assert logged_python_version(tmp_path) == expected


def test_another_python_minor_is_a_mismatch_a_patch_release_is_not(tmp_path: Path) -> None:
    (tmp_path / "python_env.yaml").write_text("python: 3.9.18\n")
    assert check_environment(tmp_path, [], installed=installed, python="3.11.7").warnings == [
        "Python: logged with 3.9.18, this runtime has 3.11.7"]
    (tmp_path / "python_env.yaml").write_text("python: 3.11.2\n")
    assert check_environment(tmp_path, [], installed=installed, python="3.11.7").warnings == []


def test_conda_yaml_pip_list_is_read_when_there_is_no_requirements_file(tmp_path: Path) -> None:
    (tmp_path / "conda.yaml").write_text("dependencies:\n- python=3.11.7\n- pip:\n  - scikit-learn==1.5.2\n")
    check = check_environment(tmp_path, ["sklearn"], installed=installed, python="3.11.7")
    assert check.warnings == ["scikit-learn: logged with 1.5.2, this runtime has 1.9.1"]


@pytest.mark.parametrize("line", [
    "-r other.txt", "--extra-index-url https://example.org", "git+https://example.org/x.git", "# comment",
    "not a requirement ===", "https://example.org/pkg.whl", "",
])
def test_lines_that_name_no_comparable_version_are_skipped(tmp_path: Path, line: str) -> None:
    (tmp_path / "requirements.txt").write_text(f"{line}\nscikit-learn==1.9.1\n")
    assert [r.name for r in logged_requirements(tmp_path)] == ["scikit-learn"]


@pytest.mark.parametrize(("pin", "decisive"), [
    ("numpy==2.0.1", False), ("numpy==1.26.4", True), ("pandas>=3", False), ("pandas==2.2.3", True),
    ("scikit-learn>=1.5", False), ("scikit-learn~=1.6.0", True), ("scikit-learn==1.9.1", False),
])
def test_numpy_and_pandas_count_by_major_the_flavour_library_by_its_specifier(
    tmp_path: Path, pin: str, decisive: bool
) -> None:
    (tmp_path / "requirements.txt").write_text(pin + "\n")
    check = check_environment(tmp_path, ["sklearn"], installed=installed, python="3.11.7")
    assert bool(check.mismatches) is decisive


def test_a_load_failure_names_the_suspect_difference_and_its_fix() -> None:
    check = EnvironmentCheck(mismatches=(
        Difference("scikit-learn", "1.6.1", "1.9.1"),))
    explained = check.explain("the model cannot be loaded: No module named '_loss'")
    assert explained.startswith("the model cannot be loaded: No module named '_loss'; scikit-learn: logged with "
                                "1.6.1, this runtime has 1.9.1; serve it with a runtime image")


@pytest.mark.parametrize(("error", "advice"), [
    ("the model cannot be loaded: No module named 'models'", 'code_paths=["models.py"] for a module file, '
                                                             'code_paths=["models"] for a package folder'),
    ("the model cannot be loaded: No module named 'models.forest'", 'code_paths=["models"] (its package folder)'),
    ("the model cannot be loaded: Untrusted types found in the file: ['sklearn.tree._tree.Tree'].",
     "mlflow.sklearn.log_model(..., skops_trusted_types=['sklearn.tree._tree.Tree'])"),
    ("the model cannot be loaded: Can't get attribute 'Scaler' on <module '__main__'>", "models-from-code"),
    ("the model cannot be loaded: disk full", None),
])
def test_well_known_causes_get_a_hint(error: str, advice: str | None) -> None:
    assert (advice in hint(error)) if advice else hint(error) == error


def test_the_running_scikit_learn_is_what_the_check_compares_with() -> None:
    assert sklearn.__version__ == RUNTIME["scikit-learn"]  # keeps RUNTIME honest about this venv
