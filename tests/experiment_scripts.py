"""The scripts of experiments/ and benchmarks/ as modules, for the tests that call their functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"


def load_script(folder: str, name: str) -> ModuleType:
    """<folder>/<name>.py (experiments or benchmarks) as the module `<folder>_<name>`, loaded once per
    test process."""
    module_name = f"{folder}_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def load_experiment(name: str) -> ModuleType:
    """experiments/<name>.py as a module."""
    return load_script("experiments", name)


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module."""
    return load_script("benchmarks", name)
