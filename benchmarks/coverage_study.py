"""Coverage and width of the attempt-share interval (``sim.stats.cluster_proportion``) against
plain Wilson, "each replication counts once" and the construction it replaced.

    python benchmarks/coverage_study.py            # a few minutes on two cores
    python benchmarks/coverage_study.py --full     # five times the samples (half an hour)
    python benchmarks/coverage_study.py --quick    # synthetic data only, 200 samples

Two parts. Synthetic: beta-binomial clusters of 40 attempts (intra-cluster correlation 0 to 1,
true shares 1e-4 to 0.5, 200 to 5,000 clusters), many samples per cell, the true share known;
then the same with restarts, where failing clusters have more attempts: each of 40 instances is
started again after a failed attempt, up to 4 attempts, at its cluster's failure probability
(drawn as above), and the truth is the share of all attempts that fail.
Scenarios: the shipped scenarios (and the default one at three longer deadlines, where failures
are rare) simulated in batches of a few hundred replications, against the share of a long run with
another seed. For each method, the share of samples whose 95 % interval holds the truth ("cover"),
the share whose upper bound does ("upper", what ``recommend`` relies on) and the mean width.
Prints tables; asserts nothing. Monte Carlo error of a coverage c from s samples: √(c(1−c)/s).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from statistics import NormalDist

import numpy as np

from sim.runner import simulate
from sim.scenario import builtin_names, resolve
from sim.stats import _wilson_high, cluster_proportion, design_effect_bound, wilson

CONFIDENCE = 0.95
ATTEMPTS = 40
MAX_ATTEMPTS = 4  # per instance in the restart design: the first start and 3 restarts
ICCS = (0.0, 0.01, 0.1, 0.5, 1.0)
SHARES = (1e-4, 1e-3, 0.02, 0.1, 0.31, 0.5)
CLUSTERS = (200, 1000, 5000)
DESIGNS = ("equal", "restarts")
METHODS = ("new", "previous", "wilson", "once")
DEADLINES_S = (25.0, 27.0, 28.0)  # capacity-storm: about 4.5 %, 1 % and 0.3 % fail


def intervals(events: np.ndarray, trials: np.ndarray) -> dict[str, np.ndarray]:
    """(samples, 2) arrays of intervals per method, for per-cluster counts of shape (samples, C)."""
    z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
    out = {m: np.empty((len(events), 2)) for m in METHODS}
    for i, (e, t) in enumerate(zip(events, trials, strict=True)):
        r = cluster_proportion(e, t, CONFIDENCE)
        k, n, c = e.sum(), t.sum(), len(t)
        out["new"][i] = r.ci_low, r.ci_high
        out["previous"][i] = 1 - previous_high(t - e, t, z), previous_high(e, t, z)
        out["wilson"][i] = wilson(k, n, CONFIDENCE)
        out["once"][i] = wilson(k / n * c, c, CONFIDENCE)
    return out


def previous_high(events: np.ndarray, trials: np.ndarray, z: float) -> float:
    """Upper bound of the replaced construction (commit 6f25333, design effect from pair counts).

    It is today's with Σ e_c m_c taken as p Σ m_c² (exact for equal clusters) and the design
    effect capped at Σ m_c² / n: blind to which clusters are the larger.
    """
    n, squares = float(trials.sum()), float(trials @ trials)
    worst = squares / n
    counts = np.sort(events[events > 0])[::-1].astype(float)
    full = np.concatenate(([0.0], np.cumsum(counts)))
    full_sq = np.concatenate(([0.0], np.cumsum(counts * counts)))
    deff = design_effect_bound(full[-1], full_sq[-1], full[-1] * worst, n, squares, worst)
    own = float(_wilson_high(full[-1] / n, n / deff, z))
    below = own - z * np.sqrt(own * (1.0 - own) * worst / n)
    j = np.arange(max(0.0, np.floor(n * below) - 1.0), full[-1])
    filled = np.searchsorted(full, j, side="right") - 1
    sq = full_sq[filled] + (j - full[filled]) ** 2
    deffs = design_effect_bound(j, sq, j * worst, n, squares, worst)
    return max(own, float(_wilson_high(j / n, n / deffs, z).max(initial=0.0)))


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


def cluster_shares(rng, share: float, icc: float, clusters: int, samples: int) -> np.ndarray:
    """Each cluster's failure probability: Beta with mean ``share`` and correlation ``icc``."""
    if icc == 0:
        return np.full((samples, clusters), share)
    if icc == 1:
        return (rng.random((samples, clusters)) < share).astype(float)
    scale = (1 - icc) / icc
    return rng.beta(share * scale, (1 - share) * scale, (samples, clusters))


def with_restarts(p: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Failures and attempts per cluster when each failed attempt is started again.

    ``reached[i]`` of the 40 instances made an (i + 1)-th attempt: those whose first i failed.
    """
    reached = [np.full(p.shape, ATTEMPTS)]
    for _ in range(MAX_ATTEMPTS):
        reached.append(rng.binomial(reached[-1], p))
    return sum(reached[1:]), sum(reached[:-1])


def restart_truth(share: float, icc: float) -> float:
    """Share of attempts that fail with restarts: E[Σ p^i] / E[Σ p^(i−1)], i = 1 … 4."""
    if icc == 0:
        moments = [share**i for i in range(MAX_ATTEMPTS + 1)]
    elif icc == 1:
        moments = [1.0] + [share] * MAX_ATTEMPTS
    else:  # Beta moments
        a, b = share * (1 - icc) / icc, (1 - share) * (1 - icc) / icc
        moments = [np.prod([(a + r) / (a + b + r) for r in range(i)]) for i in range(5)]
    return float(sum(moments[1:]) / sum(moments[:-1]))


def cell(args: tuple) -> tuple:
    design, clusters, share, icc, samples, seed = args
    rng = np.random.default_rng(seed)
    p = cluster_shares(rng, share, icc, clusters, samples)
    if design == "equal":
        events, trials, truth = rng.binomial(ATTEMPTS, p), np.full(p.shape, ATTEMPTS), share
    else:
        (events, trials), truth = with_restarts(p, rng), restart_truth(share, icc)
    return design, clusters, share, icc, truth, scores(intervals(events, trials), truth)


def synthetic(samples: int, seed: int = 0) -> list[tuple]:
    cells = [(d, c, s, i) for d in DESIGNS for c in CLUSTERS for s in SHARES for i in ICCS]
    seeds = np.random.SeedSequence(seed).generate_state(len(cells))
    jobs = [(*c, samples, int(s)) for c, s in zip(cells, seeds, strict=True)]
    with ProcessPoolExecutor(2) as pool:
        return list(pool.map(cell, jobs))


def per_replication(res, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rep = res.attempts["replication"]
    _, idx = np.unique(rep, return_inverse=True)
    return np.bincount(idx, weights=hits).astype(int), np.bincount(idx)


def scenario_cases():
    for name in builtin_names():
        yield name, resolve(name)
    base = resolve("capacity-storm")
    for t in DEADLINES_S:
        yield f"capacity-storm @ {t:g} s", base.with_overrides({"startup.db_init_timeout_s": t})


def scenarios(batches: int, per_batch: int, truth_reps: int) -> list[tuple]:
    rows = []
    for label, sc in scenario_cases():
        # Fewer for the storm: its replications are ten times slower.
        scale = 4 if sc.name == "eager-pool-storm" else 1
        long = simulate(sc, truth_reps // scale, seed=1, jobs=2, engine="auto")
        truth = float(np.mean(long.attempts["outcome"] != "ready"))
        res = simulate(sc, batches * per_batch, seed=2, jobs=2, engine="auto")
        events, trials = per_replication(res, res.attempts["outcome"] != "ready")
        ev = events.reshape(batches, per_batch)
        tr = trials.reshape(batches, per_batch)
        rows.append((label, truth, scores(intervals(ev, tr), truth)))
    return rows


def fmt(score: tuple[float, float, float]) -> str:
    cover, upper, width = score
    return f"{cover:.2f} {upper:.2f} {width:.2e}"


def print_synthetic(rows: list[tuple], samples: int) -> None:
    for design in DESIGNS:
        part = [r[1:] for r in rows if r[0] == design]
        how = "40 attempts" if design == "equal" else "40 instances, up to 4 attempts each"
        print(f"\nSynthetic beta-binomial, {design}: {how} per cluster, {samples} samples per cell")
        print("each method: interval coverage, upper-bound coverage, mean width")
        print("| clusters | share | icc | truth | " + " | ".join(METHODS) + " |")
        print("|---" * (4 + len(METHODS)) + "|")
        for clusters, share, icc, truth, sc in part:
            cells = " | ".join(fmt(sc[m]) for m in METHODS)
            print(f"| {clusters} | {share:g} | {icc:g} | {truth:.3g} | {cells} |")
        print("\nWorst cell per method (lowest coverage), and mean width relative to 'new':")
        for m in METHODS:
            worst = min(part, key=lambda r: r[4][m][0])
            low_upper = min(r[4][m][1] for r in part)
            ratio = np.mean([r[4][m][2] / r[4]["new"][2] for r in part])
            print(
                f"  {m:9s} min cover {worst[4][m][0]:.2f} (C={worst[0]}, share {worst[1]:g}, "
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
