"""raydistill: distil teacher ensembles into students of every kind under exact parameter budgets.

Pipeline (one module each): data → teachers → transfer → students + budget → train → search
(Ray) → tracking (W&B) → report / export.
"""

from __future__ import annotations

__version__ = "0.1.0"

from raydistill.budget import count_params, parse_budget, solve_budget
from raydistill.students import build as build_student


def load_student(path):  # thin lazy re-export: export.py imports safetensors
    """Rebuild an exported student from `spec.json` + `model.safetensors` (see raydistill.export)."""
    from raydistill.export import load_student as _load

    return _load(path)


__all__ = [
    "__version__",
    "build_student",
    "count_params",
    "load_student",
    "parse_budget",
    "solve_budget",
]
