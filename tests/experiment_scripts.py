"""The scripts of experiments/ as modules, for the tests that call their `main(argv)`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def load_experiment(name: str) -> ModuleType:
    """experiments/<name>.py as the module `experiments_<name>`, loaded once per test process."""
    module_name = f"experiments_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, EXPERIMENTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]
