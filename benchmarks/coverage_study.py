"""Coverage and width of the attempt-share interval (``sim.stats.cluster_proportion``) against
plain Wilson, "each replication counts once" and the construction it replaced.

    python benchmarks/coverage_study.py            # a few minutes on two cores
    python benchmarks/coverage_study.py --full     # five times the samples (half an hour)
    python benchmarks/coverage_study.py --quick    # synthetic data only, 200 samples

Two parts. Synthetic: beta-binomial clusters of 40 attempts (intra-cluster correlation 0 to 1,
true shares 1e-4 to 0.5, 200 to 5,000 clusters), many samples per cell, the true share known.
Scenarios: the shipped scenarios (and the default one at three longer deadlines, where failures
are rare) simulated in batches of a few hundred replications, against the share of a long run with
another seed. For each method, the share of samples whose 95 % interval holds the truth ("cover"),
the share whose upper bound does ("upper", what ``recommend`` relies on) and the mean width.
Prints tables; asserts nothing. Monte Carlo error of a coverage c from s samples: √(c(1−c)/s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sim.runner import simulate
from sim.scenario import builtin_names, resolve
from sim.stats import cluster_proportion, wilson

CONFIDENCE = 0.95
ATTEMPTS = 40
ICCS = (0.0, 0.01, 0.1, 0.5, 1.0)
SHARES = (1e-4, 1e-3, 0.02, 0.1, 0.31, 0.5)
CLUSTERS = (200, 1000, 5000)
METHODS = ("new", "previous", "wilson", "once")
DEADLINES_S = (25.0, 27.0, 28.0)  # staging-incident: about 3 %, 0.2 % and 0.02 % fail


def intervals(events: np.ndarray, trials: np.ndarray) -> dict[str, np.ndarray]:
    """(samples, 2) arrays of intervals per method, for per-cluster counts of shape (samples, C)."""
    out = {m: np.empty((len(events), 2)) for m in METHODS}
    for i, (e, t) in enumerate(zip(events, trials, strict=True)):
        r = cluster_proportion(e, t, CONFIDENCE)
        k, n, c = e.sum(), t.sum(), len(t)
        out["new"][i] = r.ci_low, r.ci_high
        out["previous"][i] = wilson(*previous_effective(e, t), CONFIDENCE)
        out["wilson"][i] = wilson(k, n, CONFIDENCE)
        out["once"][i] = wilson(k / n * c, c, CONFIDENCE)
    return out


def previous_effective(per_k: np.ndarray, per_n: np.ndarray) -> tuple[float, float]:
    """The replaced construction (commit 68de548): events and trials at its effective size."""
    n, clusters = per_n.sum(), len(per_n)
    p = per_k.sum() / n
    informative = min(np.count_nonzero(per_k), np.count_nonzero(per_n - per_k))
    if informative == 0:
        return p * clusters, clusters
    var_cluster = clusters / (clusters - 1) * np.sum((per_k - p * per_n) ** 2) / n**2
    measured = max(var_cluster / (p * (1 - p) / n), 1.0)
    deff = max((n / clusters + informative * measured) / (1 + informative), 1.0)
    return p * n / deff, n / deff


def scores(ivs: dict[str, np.ndarray], truth: float) -> dict[str, tuple[float, float, float]]:
    """Per method: coverage of the interval, of its upper bound, and mean width."""
    return {
        m: (
            float(np.mean((iv[:, 0] <= truth) & (truth <= iv[:, 1]))),
            float(np.mean(truth <= iv[:, 1])),
            float(np.mean(iv[:, 1] - iv[:, 0])),
        )
        for m, iv in ivs.items()
    }


def beta_binomial(rng, share: float, icc: float, clusters: int, samples: int) -> np.ndarray:
    """Failures per cluster: a share drawn per cluster from Beta(mean share, correlation icc)."""
    if icc == 0:
        return rng.binomial(ATTEMPTS, share, (samples, clusters))
    if icc == 1:
        return ATTEMPTS * (rng.random((samples, clusters)) < share)
    scale = (1 - icc) / icc
    p = rng.beta(share * scale, (1 - share) * scale, (samples, clusters))
    return rng.binomial(ATTEMPTS, p)


def synthetic(samples: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows = []
    for clusters in CLUSTERS:
        trials = np.full((samples, clusters), ATTEMPTS)
        for share in SHARES:
            for icc in ICCS:
                events = beta_binomial(rng, share, icc, clusters, samples)
                rows.append((clusters, share, icc, scores(intervals(events, trials), share)))
    return rows


def per_replication(res, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rep = res.attempts["replication"]
    _, idx = np.unique(rep, return_inverse=True)
    return np.bincount(idx, weights=hits).astype(int), np.bincount(idx)


def scenario_cases():
    for name in builtin_names():
        yield name, resolve(name)
    base = resolve("staging-incident")
    for t in DEADLINES_S:
        yield f"staging-incident @ {t:g} s", base.with_overrides({"startup.db_init_timeout_s": t})


def scenarios(batches: int, per_batch: int, truth_reps: int) -> list[tuple]:
    rows = []
    for label, sc in scenario_cases():
        # Fewer for the storm: its replications are ten times slower.
        scale = 4 if sc.name == "eager-pool-storm" else 1
        long = simulate(sc, truth_reps // scale, seed=1, jobs=2)
        truth = float(np.mean(long.attempts["outcome"] != "ready"))
        res = simulate(sc, batches * per_batch, seed=2, jobs=2)
        events, trials = per_replication(res, res.attempts["outcome"] != "ready")
        ev = events.reshape(batches, per_batch)
        tr = trials.reshape(batches, per_batch)
        rows.append((label, truth, scores(intervals(ev, tr), truth)))
    return rows


def fmt(score: tuple[float, float, float]) -> str:
    cover, upper, width = score
    return f"{cover:.2f} {upper:.2f} {width:.2e}"


def print_synthetic(rows: list[tuple], samples: int) -> None:
    print(f"\nSynthetic beta-binomial, {ATTEMPTS} attempts per cluster, {samples} samples per cell")
    print("each method: interval coverage, upper-bound coverage, mean width")
    print("| clusters | share | icc | " + " | ".join(METHODS) + " |")
    print("|---" * (3 + len(METHODS)) + "|")
    for clusters, share, icc, sc in rows:
        cells = " | ".join(fmt(sc[m]) for m in METHODS)
        print(f"| {clusters} | {share:g} | {icc:g} | {cells} |")
    print("\nWorst cell per method (lowest coverage), and mean width relative to 'new':")
    for m in METHODS:
        worst = min(rows, key=lambda r: r[3][m][0])
        low_upper = min(r[3][m][1] for r in rows)
        ratio = np.mean([r[3][m][2] / r[3]["new"][2] for r in rows])
        print(
            f"  {m:9s} min cover {worst[3][m][0]:.2f} (C={worst[0]}, share {worst[1]:g}, "
            f"icc {worst[2]:g}), min upper {low_upper:.2f}, width ×{ratio:.2f}"
        )


def print_scenarios(rows: list[tuple], batches: int, per_batch: int) -> None:
    print(f"\nShipped scenarios, P(start attempt fails): {batches} batches of {per_batch} reps")
    print("| scenario | truth | " + " | ".join(METHODS) + " |")
    print("|---" * (2 + len(METHODS)) + "|")
    for label, truth, sc in rows:
        print(f"| {label} | {truth:.2e} | " + " | ".join(fmt(sc[m]) for m in METHODS) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="synthetic part only, 200 samples")
    size.add_argument("--full", action="store_true", help="5,000 samples, 200 batches")
    args = parser.parse_args()
    samples, batches = (200, 0) if args.quick else (5000, 200) if args.full else (1000, 40)
    start = time.perf_counter()
    print_synthetic(synthetic(samples), samples)
    if batches:
        print_scenarios(scenarios(batches, 200, 10_000), batches, 200)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
