"""The shared number rules (raydistill.core.numbers) and the first-line rule of core.errors."""

import json
import math

import numpy as np
import pytest

from raydistill.core.errors import first_line
from raydistill.core.numbers import MISSING, finite, jsonable, optional_int, pct, scalar


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0.5),
        ("0.25", 0.25),
        (3, 3.0),
        (np.float32(0.5), 0.5),
        (None, None),
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        ("abc", None),
        ([1], None),
    ],
)
def test_finite(value, expected):
    assert finite(value) == expected


def test_scalar_optional_int_jsonable_pct():
    assert scalar(np.array(2.5)) == 2.5 and scalar(True) is None and scalar("1") is None
    assert optional_int(math.nan) is None and optional_int(7.0) == 7
    doc = jsonable({"a": (1, math.nan), 2: {"b": [math.inf, 0.5]}})
    assert doc == {"a": [1, None], "2": {"b": [None, 0.5]}}
    json.dumps(doc, allow_nan=False)  # strict JSON: raises on NaN left behind
    assert pct(0.91623) == "91.62" and pct(0.5, "%") == "50.00%"
    assert pct(None) == pct(math.nan) == MISSING


def test_first_line():
    assert first_line(RuntimeError("\n  Error(s) here:  \n\tdetail")) == "Error(s) here:"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 500), limit=10) == "x" * 10
