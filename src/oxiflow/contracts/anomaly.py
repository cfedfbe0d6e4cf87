"""Robust z-scores of a run's figure against the history of earlier runs (median and MAD).

``z = 0.6745 * (x - median) / MAD`` (Iglewicz and Hoaglin's modified z-score): the median and the
median absolute deviation are not dragged by the outliers the check looks for, unlike mean and
standard deviation. When MAD is 0 (more than half of the history is one value) the mean absolute
deviation stands in (``z = (x - median) / (1.253314 * MeanAD)``, the same scale); when that is 0 too
(a constant history) any change is an anomaly (z = ±inf) and no change is z = 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def robust_z(x: float, history: Sequence[float]) -> float:
    if not history:
        return 0.0
    median = statistics.median(history)
    mad = statistics.median([abs(h - median) for h in history])
    if mad > 0:
        return 0.6745 * (x - median) / mad
    mean_ad = statistics.fmean([abs(h - median) for h in history])
    if mean_ad > 0:
        return (x - median) / (1.253314 * mean_ad)
    if x == median:
        return 0.0
    return math.copysign(math.inf, x - median)
