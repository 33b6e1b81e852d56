"""The synthetic study behind `pwbench compare`'s verdict: how often it cries wolf and how often it
catches a real loss, on lognormal timing samples with a fixed seed.

    python scripts/compare_study.py [--seed 20261123] [--trials 200] [--samples 30] [--noise 5]

tests/test_compare.py runs the same study and asserts the rates the issue asks for.
"""

from __future__ import annotations

import argparse

import numpy as np

from pwbench.analysis import stats

SEED = 20261123
# (what, true new/base time ratio, samples per side)
CASES = (("A/A, no change", 1.00, 30), ("2 % slower (below threshold)", 1.02, 30),
         ("2 % slower, 300 samples (significant, below threshold)", 1.02, 300),
         ("10 % slower", 1.10, 30), ("10 % faster", 1 / 1.10, 30))


def verdicts(factor: float, samples: int, trials: int, noise: float, threshold: float,
             rng: np.random.Generator) -> dict[str, int]:
    """Verdict counts over `trials` pairs: base ~ lognormal(0, noise), new = factor x the same law."""
    counts: dict[str, int] = {}
    for _ in range(trials):
        base = np.exp(rng.normal(0.0, noise, samples))
        new = factor * np.exp(rng.normal(0.0, noise, samples))
        verdict = stats.timing_verdict(stats.shift(base, new), threshold)
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--noise", type=float, default=5.0, help="lognormal sigma, in percent")
    parser.add_argument("--threshold", type=float, default=5.0, help="in percent")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"seed {args.seed}, {args.trials} trials per case, {args.noise:g} % lognormal noise, "
          f"threshold {args.threshold:g} %, {stats.CONFIDENCE:.0%} interval")
    for what, factor, samples in CASES:
        counts = verdicts(factor, samples, args.trials, args.noise / 100, args.threshold / 100, rng)
        rates = ", ".join(f"{v} {n / args.trials:.1%}" for v, n in sorted(counts.items()))
        print(f"  {what:58s} n={samples:<4d} {rates}")


if __name__ == "__main__":
    main()
