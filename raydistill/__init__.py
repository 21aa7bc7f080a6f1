"""raydistill: distil teacher ensembles into students of every kind under exact parameter budgets.

The package is the pipeline, one folder per layer, lowest first (docs/design.md): core → data →
students (+ budget) → training → tracking (W&B) → distill (teachers, transfer set) → search
(Ray Tune) → report → export → study → cli. A module imports only from its own layer and the
ones below it (tests/test_layout.py).

The public names below are loaded on first use (PEP 562), so `import raydistill` — and with it
`raydistill --help` and every refusal of bad input — does not pay for importing torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY = {
    "build_student": ("raydistill.students", "build"),
    "count_params": ("raydistill.students.budget", "count_params"),
    "load_student": ("raydistill.export.inference", "load_student"),
    "parse_budget": ("raydistill.students.budget", "parse_budget"),
    "solve_budget": ("raydistill.students.budget", "solve_budget"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'raydistill' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "__version__",
    "build_student",
    "count_params",
    "load_student",
    "parse_budget",
    "solve_budget",
]
