"""The statistics of `pwbench compare`: intervals of the new/base time ratio, and the verdicts.

Why this test. Timing noise is multiplicative and right-skewed (interrupts, frequency changes, a
busy neighbour), so every comparison is made on log(time): a slowdown is a shift of the log-time
distribution, and a ratio of times is a difference of logs. For that shift we use the
Hodges-Lehmann estimate (the median of all pairwise log ratios new_i / base_j) and its
distribution-free confidence interval obtained by inverting the Mann-Whitney U test (Moses'
interval). Compared with a t-test it needs no normality and shrugs off outliers; compared with a
bootstrap of the ratio of medians it is deterministic (the same inputs always give the same
verdict, which a CI gate must) and keeps its coverage with as few as 7 samples per side, where the
percentile bootstrap of a median is known to be too narrow.

Verdict, with t the minimum effect (`--threshold`, default 5 %) and an 80 % two-sided interval
(so each bound is a one-sided 90 % bound):
  slower     the interval's lower bound is above 1 + t: 90 % confident the loss is at least t
  faster     the upper bound is below 1 / (1 + t)
  same       the whole interval lies within [1 / (1 + t), 1 + t]: any change is below t
  uncertain  anything else: too noisy to tell at this sample count (not a regression; listed)
Requiring the *bound*, not the point estimate, to clear the threshold is what keeps the false
alarm rate low for every true change up to t (about 10 % for a change of exactly t, about 1 in
2000 for a 2 % change, none seen for an A/A pair), at the price of needing a loss somewhat above t
to be sure of it: with 5 % lognormal noise and 30 samples a side, a 10 % loss is caught about 98 %
of the time. scripts/compare_study.py measures these rates.

Between processes. The samples of one process share its state (memory layout, thread placement,
clock): on a shared VM a kernel's median moves by more than 5 % from one process to the next
while each process's own interval stays tight. Runs therefore measure every kernel in several
processes (`--processes`), and when both sides have at least two, the processes are units too: a
Welch t interval on the per-process log medians, each side's variance guarded by its run's pooled
one (`process_shift`).

Between invocations. The processes of one invocation share more still (the machine's state in
that time window: its other tenants, its clocks), and on a shared 2-core VM whole invocations
moved by 20-60 % together (README, Regression tracking): no interval built from one invocation's
processes covers that. A baseline of several invocations (several BASE runs, or the recorded runs
of one fingerprint with --against-history) carries it: each invocation's mean log time is a unit,
the variance of one invocation's mean is estimated from the baseline's invocations (guarded, as
above, by the variance pooled over every kernel of the baseline, which shift together), and the
new run, one more invocation, gets a t interval on its difference from the baseline's mean
(`invocation_shift`): a prediction interval for an unchanged invocation. It needs a baseline of
at least two invocations; with one, the row says that this spread is not in the interval.

The interval of the verdict is the hull of those that exist (`combined_shift`), so each source of
spread widens it instead of producing a confident false verdict.

Instruction counts (`pwbench run --clock instructions`). A count does not drift with the machine,
so no interval is needed: a counted kernel's verdict is a plain threshold on the ratio of its
median counts per call (`count_verdict`, `--count-threshold`, default COUNT_THRESHOLD = 2 %, above
the noise floor of measure/instructions.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.80  # two-sided; each bound is a one-sided 90 % bound
COUNT_THRESHOLD = 0.02  # instruction counts: above the noise floor measured across invocations
Z_ONE_SIDED = 1.2815515655446004  # standard normal quantile at 0.90


@dataclass
class Shift:
    """new / base time ratio: the Hodges-Lehmann estimate and the interval built around it."""
    ratio: float
    low: float
    high: float
    p_value: float  # two-sided Mann-Whitney U, H0: no shift (or a t test across units)
    units: str = "samples"  # the widest level the interval treats as independent units:
    # samples, processes or invocations


def shift(base, new) -> Shift:
    """Hodges-Lehmann ratio (median pairwise ratio) and its Moses (Mann-Whitney inverted) interval.

    The point estimate is the one the interval is built around, so it always lies inside it (a
    ratio of medians can fall outside on skewed samples)."""
    b, n = np.log(np.asarray(base, float)), np.log(np.asarray(new, float))
    m, k = len(b), len(n)
    diffs = (n[:, None] - b[None, :]).ravel()
    # number of pairwise differences cut off each tail (normal approximation of U's distribution)
    sd_u = math.sqrt(m * k * (m + k + 1) / 12)
    cut = max(0, math.floor(m * k / 2 - Z_ONE_SIDED * sd_u - 0.5))
    lo, hi = np.partition(diffs, [cut, diffs.size - 1 - cut])[[cut, diffs.size - 1 - cut]]
    u = float((diffs > 0).sum() + 0.5 * (diffs == 0).sum())  # U statistic of NEW over BASE
    z = (abs(u - m * k / 2) - 0.5) / sd_u if sd_u else 0.0
    ratio = float(np.exp(np.median(diffs)))
    return Shift(ratio, float(np.exp(lo)), float(np.exp(hi)), math.erfc(max(z, 0.0) / math.sqrt(2)))


@dataclass(frozen=True)
class Spread:
    """Variance of log times between units (processes or invocations) and its degrees of freedom."""
    var: float
    df: int


def spread(logs: np.ndarray) -> Spread | None:
    """The spread of values already on the log scale (per-unit log medians or means)."""
    logs = np.asarray(logs, float)
    return Spread(float(logs.var(ddof=1)), logs.size - 1) if logs.size >= 2 else None


def pooled_spread(spreads) -> Spread | None:
    """The spread of a whole run (or baseline): every kernel's, weighted by its degrees of freedom.
    A run's units share the machine states that cause the spread, so this estimate (tens of
    degrees of freedom) guards each kernel's own (two, with three units), which is sometimes small
    by chance, against a confident false verdict."""
    spreads = [s for s in spreads if s is not None]
    df = sum(s.df for s in spreads)
    return Spread(sum(s.var * s.df for s in spreads) / df, df) if df else None


def guarded(own: Spread | None, pooled: Spread | None) -> Spread | None:
    """The larger of a kernel's own spread and its run's pooled one."""
    if own is None or (pooled is not None and pooled.var > own.var):
        return pooled
    return own


def t_interval(diff: float, var: float, df: float, units: str) -> Shift | None:
    """A Shift from a difference of mean logs, its variance and degrees of freedom."""
    se = math.sqrt(var)
    if se == 0 or not df > 0:
        return None
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
    p_value = float(2 * stats.t.sf(abs(diff) / se, df))
    return Shift(math.exp(diff), math.exp(diff - half), math.exp(diff + half), p_value, units)


def process_shift(base_logs: np.ndarray, new_logs: np.ndarray, base_run: Spread | None,
                  new_run: Spread | None) -> Shift | None:
    """Welch's t interval of the mean log ratio of per-process medians (given as logs), each
    side's variance guarded by its run's pooled one; None below two processes a side."""
    if min(base_logs.size, new_logs.size) < 2:
        return None
    b, n = guarded(spread(base_logs), base_run), guarded(spread(new_logs), new_run)
    vb, vn = b.var / base_logs.size, n.var / new_logs.size
    if vb + vn == 0:
        return None
    df = (vb + vn) ** 2 / (vb ** 2 / b.df + vn ** 2 / n.df)
    return t_interval(float(new_logs.mean() - base_logs.mean()), vb + vn, df, "processes")


def invocation_shift(base_means: np.ndarray, new_means: np.ndarray,
                     baseline: Spread | None) -> Shift | None:
    """The interval of NEW's mean log time against the baseline's invocations (each a mean log
    time): the variance of one invocation's mean, from the baseline's invocations (guarded by
    `baseline`, pooled over its kernels), scaled by 1/k_new + 1/k_base; None with fewer than two
    baseline invocations (no spread to estimate)."""
    if base_means.size < 2 or new_means.size < 1:
        return None
    own = guarded(spread(base_means), baseline)
    var = own.var * (1 / new_means.size + 1 / base_means.size)
    return t_interval(float(new_means.mean() - base_means.mean()), var, own.df, "invocations")


def hull(within: Shift, *others: Shift | None) -> Shift:
    """The within-process interval widened to every other one that exists; the units named are
    the widest level among them."""
    result = within
    for other in (o for o in others if o is not None):
        result = Shift(within.ratio, min(result.low, other.low), max(result.high, other.high),
                       max(result.p_value, other.p_value), other.units)
    return result


def timing_verdict(s: Shift, threshold: float) -> str:
    up, down = 1 + threshold, 1 / (1 + threshold)
    if s.low > up:
        return "slower"
    if s.high < down:
        return "faster"
    if down <= s.low and s.high <= up:
        return "same"
    return "uncertain"


def count_verdict(ratio: float, threshold: float) -> str:
    """Instruction counts: a plain threshold on new / base (no interval: see the docstring)."""
    if ratio > 1 + threshold:
        return "slower"
    if ratio < 1 / (1 + threshold):
        return "faster"
    return "same"
