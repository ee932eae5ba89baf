"""How the site writes numbers (index and model pages): rounded to their uncertainty, full precision kept apart."""

from __future__ import annotations

import math
import re
from typing import Any

import markupsafe

from .entry import finite_float as _finite

NONE = "—"


def _fixed(x: float, decimals: int) -> str:
    """``x`` with ``decimals`` decimals (negative: rounded to tens, hundreds, …); never "-0.00"."""
    text = f"{x:.{decimals}f}" if decimals >= 0 else f"{round(x, decimals):.0f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def plain(x: Any) -> str:
    """A value without a known uncertainty: 3 significant digits (whole numbers from 1000 on), "—" when absent;
    |x| < 1e-12 (float noise around 0) prints as 0."""
    v = _finite(x)
    if v is None:
        return NONE
    if abs(v) < 1e-12:
        return "0"
    if abs(v) < 1e-4:
        return f"{v:.2e}"
    return _fixed(v, max(0, 2 - math.floor(math.log10(abs(v)))))


def ci_decimals(lo: Any, hi: Any) -> int | None:
    """Decimals that keep 2 significant digits of the CI's half-width (hi − lo)/2, or None (no usable CI)."""
    a, b = _finite(lo), _finite(hi)
    if a is None or b is None or b <= a:
        return None
    return min(15, 1 - math.floor(math.log10((b - a) / 2)))


def rounded(x: Any, lo: Any = None, hi: Any = None) -> str:
    """``x`` rounded to its 95% CI [lo, hi] (:func:`ci_decimals`), else :func:`plain`."""
    v, d = _finite(x), ci_decimals(lo, hi)
    return plain(x) if v is None or d is None else _fixed(v, d)


def ci_text(lo: Any, hi: Any) -> str:
    """ "[lo, hi]" with the decimals of :func:`ci_decimals`; "—" without a CI."""
    d = ci_decimals(lo, hi)
    return NONE if d is None else f"[{_fixed(float(lo), d)}, {_fixed(float(hi), d)}]"


def data_value(x: Any) -> str:
    """The full-precision sort key of a cell (``data-v``): repr of a finite float, "" when absent."""
    v = _finite(x)
    return "" if v is None else repr(v)


def wbr(text: Any) -> markupsafe.Markup:
    """Escaped ``text`` with a line-break opportunity after every "/" and "_" (long model and task names)."""
    return markupsafe.Markup(re.sub(r"([/_])", r"\1<wbr>", str(markupsafe.escape(str(text)))))
