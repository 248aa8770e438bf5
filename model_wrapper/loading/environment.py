"""The model's logged environment against this runtime's: what is missing, what differs, how to fix it.

Called by `model_wrapper.loading.mlflow_loader` at start-up, before and (for the hint) after the model is loaded.
Reads `requirements.txt` (any specifier), `python_env.yaml` (with its Python version) and, when
those are absent, `conda.yaml`; compares them with the installed distributions. Pure apart from
reading those files: the installed versions and the Python version are passed in by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from model_wrapper.contract.spec import NEEDS_NEW_VERSION

# The library each MLflow flavour loads with: a different version of it decides how the model loads.
FLAVOUR_LIBRARIES = {
    "sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm", "catboost": "catboost",
    "pytorch": "torch", "tensorflow": "tensorflow", "keras": "keras", "onnx": "onnxruntime",
    "statsmodels": "statsmodels", "prophet": "prophet", "spacy": "spacy", "transformers": "transformers",
    "sentence_transformers": "sentence-transformers", "h2o": "h2o", "pmdarima": "pmdarima",
    "spark": "pyspark", "paddle": "paddlepaddle",
}
# numpy and pandas change their pickled formats between majors: any model may depend on them.
MAJOR_ONLY = ("numpy", "pandas")
Installed = Callable[[str], str | None]
"""The installed version of a distribution, or None when it is not installed."""


@dataclass(frozen=True)
class Difference:
    """One package (or Python itself) where the model's environment and this runtime's disagree."""

    package: str
    logged: str
    """What the model asks for: `1.6.1`, or a specifier such as `>=2,<3`."""
    installed: str | None

    def __str__(self) -> str:
        has = f"this runtime has {self.installed}" if self.installed else "this runtime does not have it"
        return f"{self.package}: logged with {self.logged}, {has}"

    @property
    def pin(self) -> str:
        """A requirement that gives the model what it was logged with (for EXTRA_REQUIREMENTS)."""
        wanted = self.logged if self.logged[:1] in "<>=!~" else f"=={self.logged}"
        return f"{self.package}{wanted}" if self.logged else self.package


@dataclass(frozen=True)
class EnvironmentCheck:
    """The outcome: libraries the model's flavour needs that are missing, decisive version differences,
    and every other difference (for the log)."""

    missing: tuple[Difference, ...] = ()
    mismatches: tuple[Difference, ...] = ()
    other: tuple[Difference, ...] = ()

    @property
    def warnings(self) -> list[str]:
        return [str(d) for d in self.mismatches]

    def fatal(self, policy: Literal["warn", "fail"]) -> str | None:
        """The reason not to serve, or None: a missing flavour library always, a mismatch with `fail`."""
        if self.missing:
            names = ", ".join(f"{d.package} {d.logged}".strip() for d in self.missing)
            return f"the model needs {names}, which this runtime does not have; {fix(self.missing)}"
        if policy == "fail" and self.mismatches:
            return (f"the model's environment differs from this runtime's (ENV_MISMATCH=fail): "
                    f"{'; '.join(self.warnings)}; {fix(self.mismatches)}")
        return None

    def explain(self, error: str) -> str:
        """A load failure, with the differences that may well be its cause and how to remove them."""
        suspects = self.mismatches + tuple(d for d in self.other if d.installed is None)
        if suspects:
            return f"{error}; {'; '.join(str(d) for d in suspects[:4])}; {fix(suspects[:4])}"
        return hint(error)


def fix(differences: Iterable[Difference]) -> str:
    """How to give the model what it was logged with: a runtime image, or the image's extra requirements."""
    differences = list(differences)
    pins = " ".join(d.pin for d in differences if d.package != "Python")
    key = next((d.package for d in differences if d.package != "Python"), "PACKAGE")
    runtime = f"serve it with a runtime image that has it (RUNTIME_IMAGES=\"{key}=<image>\")"
    if not pins:
        return ("serve it with a runtime image built on that Python (the Dockerfile's PYTHON_IMAGE, named in "
                "RUNTIME_IMAGES), or log the model again with this runtime's Python")
    return f"{runtime}, or build the wrapper image with EXTRA_REQUIREMENTS=\"{pins}\""


def hint(error: str) -> str:
    """A well-known cause, named: code that was not logged with the model, or a class pickle cannot find."""
    if (match := re.search(r"No module named '([\w.]+)'", error)) is not None:
        module, top = match.group(1), match.group(1).split(".")[0]
        # code_paths takes files and folders, not module names: a module is its .py file, a package its folder.
        paths = (f'code_paths=["{top}.py"] for a module file, code_paths=["{top}"] for a package folder'
                 if top == module else f'code_paths=["{top}"] (its package folder)')
        return (f"{error}; if '{top}' is your own code, log it with the model: log_model(..., {paths}; "
                f"{NEEDS_NEW_VERSION}; if it is a library, add it to the runtime (RUNTIME_IMAGES) and to the "
                "model's pip_requirements")
    if (match := re.search(r"Untrusted types found in the file: (\[[^\]]*\])", error)) is not None:
        return (f"{error}; skops refuses these types unless you trust them (you trained the model): "
                f"mlflow.sklearn.log_model(..., skops_trusted_types={match.group(1)}), {NEEDS_NEW_VERSION}")
    if re.search(r"Can't get attribute|Can't pickle|has no attribute|UnpicklingError", error):
        return (f"{error}; the model refers to a class that cannot be found where it was defined (a notebook's "
                "or script's __main__): define the class in a module and log it with code_paths, or log the "
                f"model as code (models-from-code), {NEEDS_NEW_VERSION}")
    return error


def check_environment(model_dir: Path, flavours: Iterable[str], *, installed: Installed,
                      python: str) -> EnvironmentCheck:
    """Compare the environment logged in `model_dir` with this runtime (`installed`, `python`)."""
    wanted = logged_requirements(model_dir)
    decisive = {FLAVOUR_LIBRARIES[f] for f in flavours if f in FLAVOUR_LIBRARIES}
    missing: list[Difference] = []
    mismatches: list[Difference] = []
    other: list[Difference] = []
    for requirement in wanted:
        name = str(canonicalize_name(requirement.name))
        version = installed(name)
        logged = str(requirement.specifier).removeprefix("==")
        if version is None:
            (missing if name in decisive else other).append(Difference(name, logged, None))
        elif not _satisfies(requirement, version, major_only=name in MAJOR_ONLY):
            (mismatches if name in decisive or name in MAJOR_ONLY else other).append(
                Difference(name, logged, version))
    for library in sorted(decisive - {str(canonicalize_name(r.name)) for r in wanted}):
        if installed(library) is None:  # no requirements file at all: the flavour alone says what it needs
            missing.append(Difference(library, "", None))
    logged_python = logged_python_version(model_dir)
    if logged_python and _minor(logged_python) != _minor(python):
        mismatches.append(Difference("Python", logged_python, python))
    return EnvironmentCheck(tuple(missing), tuple(mismatches), tuple(other))


def logged_requirements(model_dir: Path) -> list[Requirement]:
    """The model's pip requirements that apply here: requirements.txt, else conda.yaml's pip list."""
    path = model_dir / "requirements.txt"
    if path.is_file():
        lines = path.read_text(errors="replace").splitlines()
    else:
        lines = [str(item) for item in _conda_pip(_yaml(model_dir / "conda.yaml"))]
    found = []
    for line in lines:
        text = line.split(" #")[0].strip()
        if not text or text.startswith(("#", "-", "git+", "http:", "https:", "file:")):
            continue  # options (-r, -c, --index-url), comments and direct URLs name no version to compare
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.url is None and (requirement.marker is None or requirement.marker.evaluate()):
            found.append(requirement)
    return found


def logged_python_version(model_dir: Path) -> str | None:
    """The Python the model was logged with: python_env.yaml's `python`, else conda.yaml's `python=`."""
    python_env = _yaml(model_dir / "python_env.yaml")
    if isinstance(python_env, dict) and python_env.get("python"):
        return str(python_env["python"])
    conda = _yaml(model_dir / "conda.yaml")
    for item in conda.get("dependencies") or [] if isinstance(conda, dict) else []:
        if isinstance(item, str) and (match := re.fullmatch(r"python\s*=+\s*([\d.]+)\S*", item.strip())):
            return match.group(1)
    return None


def _conda_pip(conda: Any) -> list[Any]:
    for item in conda.get("dependencies") or [] if isinstance(conda, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("pip"), list):
            return list(item["pip"])
    return []


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(errors="replace")) if path.is_file() else None
    except yaml.YAMLError:
        return None  # an unreadable environment file only costs the check its information


def _satisfies(requirement: Requirement, installed: str, *, major_only: bool) -> bool:
    if not requirement.specifier:
        return True
    try:
        version = Version(installed)
    except InvalidVersion:
        return True  # nothing to compare with
    if major_only:
        pinned = [s.version for s in requirement.specifier if s.operator in ("==", "===")]
        if pinned:
            return _major(pinned[0]) == version.major
    return requirement.specifier.contains(version, prereleases=True)


def _major(text: str) -> int | None:
    try:
        return Version(text.rstrip(".*")).major
    except InvalidVersion:
        return None


def _minor(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])
