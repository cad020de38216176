#!/usr/bin/env python3
"""Independent NumPy reference for the coordinator's aggregation strategies.

This script is the source of ``tests/strategies/fixtures.json``, the expected
values the Rust unit tests of the coordinator's aggregation strategies compare
against. It is written from the papers' formulas, not from the Rust code, so
that the two implementations check each other.

Regenerate (deterministic: every case draws its inputs from
``np.random.default_rng(<its own fixed seed>)``)::

    python3 -m pip install -r tests/strategies/requirements.txt
    python3 tests/strategies/reference.py > tests/strategies/fixtures.json

Strategies and where their formulas come from
---------------------------------------------
* fedavg        McMahan et al. 2017, "Communication-Efficient Learning of Deep
                Networks from Decentralized Data":
                Δ = Σ n_i Δ_i / Σ n_i ;  x' = x + Δ
* fedavgm       Hsu, Qi, Brown 2019, "Measuring the Effects of Non-Identical
                Data Distribution for Federated Visual Classification"
                (server momentum):  m ← β·m + Δ ;  x' = x + η·m   (m_0 = 0)
* fedadam       Reddi et al. 2021, "Adaptive Federated Optimization",
                Algorithm 2, no bias correction:
                m ← β1·m + (1−β1)·Δ ;  v ← β2·v + (1−β2)·Δ² ;
                x' = x + η·m / (√v + τ)          (m_0 = 0, v_0 = τ²)
* fedyogi       same paper:  v ← v − (1−β2)·Δ²·sign(v − Δ²)   (sign(0) = 0)
* fedadagrad    same paper:  v ← v + Δ²   (m as in Adam; β1 = 0 gives m = Δ)
* median        Yin et al. 2018, "Byzantine-Robust Distributed Learning:
                Towards Optimal Statistical Rates": coordinate-wise median,
                unweighted (even count: mean of the two middle values).
* trimmed_mean  same paper: per coordinate drop the k = floor(β·n) smallest and
                k largest values, unweighted mean of the rest.
* krum          Blanchard et al. 2017, "Machine Learning with Adversaries:
                Byzantine Tolerant Gradient Descent" (Krum for m = 1,
                Multi-Krum for m > 1): score_i = sum of the n − f − 2 smallest
                ‖Δ_i − Δ_j‖² over j ≠ i; the m lowest scores are selected (ties
                to the lower index) and averaged unweighted.
* clip_fixed    L2 clipping of each update to norm C (Δ_i · C/‖Δ_i‖ when
                ‖Δ_i‖ > C), then fedavg of the clipped updates.
* clip_adaptive Andrew et al. 2021, "Differentially Private Learning with
                Adaptive Clipping", geometric update without noise:
                clip with the current C, fedavg, b = fraction with ‖Δ_i‖ ≤ C,
                C ← C·exp(−η_C·(b − γ)).

Precision conventions (mirroring the Rust coordinator)
------------------------------------------------------
* Inputs x0, deltas and weights are drawn, then rounded to float32; the
  fixtures hold exactly those float32 values (as Python floats).
* The global model and the optimiser state (momentum, m, v) are stored as
  float32 between rounds. Each round is computed in float64 from the float32
  inputs and state; at the end of the round the new x and every state vector
  are cast to float32, which is what the fixtures hold and what the next round
  starts from. The initial state (m = 0, v = τ²) is float32 too.
* The adaptive clip norm C is kept in float64 throughout.
* Intermediate values that are never stored (krum scores, clipped deltas) are
  written in float64.

Output: JSON on stdout, indent 1, floats written with repr (round-trip exact).
"""

import json
import math
import sys

import numpy as np

F32 = np.float32
F64 = np.float64


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def f32(a):
    """Round to float32 storage precision (the value as the coordinator stores it)."""
    return np.asarray(a, dtype=F64).astype(F32)


def to64(a):
    """Widen (already float32) values to float64 for a round's computation."""
    return np.asarray(a).astype(F64)


def flist(a):
    """Array -> list of Python floats (exact; json writes them with repr)."""
    return [float(v) for v in np.asarray(a).ravel()]


def fmatrix(a):
    return [flist(row) for row in np.asarray(a)]


def weighted_mean(deltas, weights):
    """fedavg mean delta, float64: Σ n_i Δ_i / Σ n_i."""
    d = to64(deltas)
    w = to64(weights)
    return (w[:, None] * d).sum(axis=0) / w.sum()


def l2_norms(deltas):
    """Per-update L2 norms in float64."""
    d = to64(deltas)
    return np.sqrt((d * d).sum(axis=1))


# --------------------------------------------------------------------------
# Strategies: each takes float32 x, float32 state, float32 deltas, weights and
# returns (new x in float64, new state in float64, extra outputs). The caller
# casts x and state to float32 (storage) at the end of the round.
# --------------------------------------------------------------------------

def step_fedavg(x, state, deltas, weights, p):
    return to64(x) + weighted_mean(deltas, weights), {}, {}


def step_fedavgm(x, state, deltas, weights, p):
    delta = weighted_mean(deltas, weights)
    mom = p["momentum"] * to64(state["momentum"]) + delta
    return to64(x) + p["eta"] * mom, {"momentum": mom}, {}


def _adaptive(x, state, deltas, weights, p, v_update):
    """Shared body of FedAdam / FedYogi / FedAdagrad (Reddi et al. 2021, Alg. 2)."""
    delta = weighted_mean(deltas, weights)
    m = p["beta1"] * to64(state["m"]) + (1.0 - p["beta1"]) * delta
    v = v_update(to64(state["v"]), delta * delta)
    x_new = to64(x) + p["eta"] * m / (np.sqrt(v) + p["tau"])
    return x_new, {"m": m, "v": v}, {}


def step_fedadam(x, state, deltas, weights, p):
    b2 = p["beta2"]
    return _adaptive(x, state, deltas, weights, p,
                     lambda v, d2: b2 * v + (1.0 - b2) * d2)


def step_fedyogi(x, state, deltas, weights, p):
    b2 = p["beta2"]
    return _adaptive(x, state, deltas, weights, p,
                     lambda v, d2: v - (1.0 - b2) * d2 * np.sign(v - d2))


def step_fedadagrad(x, state, deltas, weights, p):
    return _adaptive(x, state, deltas, weights, p, lambda v, d2: v + d2)


def step_median(x, state, deltas, weights, p):
    return to64(x) + np.median(to64(deltas), axis=0), {}, {}


def trimmed_mean(deltas, beta):
    n = len(deltas)
    k = math.floor(beta * n)
    s = np.sort(to64(deltas), axis=0)
    return s[k:n - k].mean(axis=0)


def step_trimmed_mean(x, state, deltas, weights, p):
    return to64(x) + trimmed_mean(deltas, p["beta"]), {}, {}


def krum_scores(deltas, f):
    d = to64(deltas)
    n = len(d)
    assert n > 2 * f + 2, "krum needs n > 2f + 2"
    diff = d[:, None, :] - d[None, :, :]
    dist2 = (diff * diff).sum(axis=2)
    scores = np.empty(n)
    for i in range(n):
        others = np.sort(np.delete(dist2[i], i))
        scores[i] = others[: n - f - 2].sum()
    return scores


def krum_select(deltas, f, m):
    scores = krum_scores(deltas, f)
    order = np.argsort(scores, kind="stable")  # ties -> lower index
    return sorted(int(i) for i in order[:m]), scores


def step_krum(x, state, deltas, weights, p):
    selected, scores = krum_select(deltas, p["f"], p["m"])
    agg = to64(deltas)[selected].mean(axis=0)
    return to64(x) + agg, {}, {"expected_selected": selected,
                                "expected_scores": flist(scores)}


def clip(deltas, c):
    """Scale every update with L2 norm > c down to norm c (float64)."""
    d = to64(deltas)
    norms = l2_norms(deltas)
    clipped = norms > c
    scale = np.where(clipped, c / np.where(clipped, norms, 1.0), 1.0)
    return d * scale[:, None], clipped, norms


def step_clip_fixed(x, state, deltas, weights, p):
    cd, clipped, _ = clip(deltas, p["c"])
    return to64(x) + weighted_mean(cd, weights), {}, {
        "expected_clipped": [bool(b) for b in clipped],
        "expected_clipped_deltas": fmatrix(cd),
    }


STEPS = {
    "fedavg": step_fedavg,
    "fedavgm": step_fedavgm,
    "fedadam": step_fedadam,
    "fedyogi": step_fedyogi,
    "fedadagrad": step_fedadagrad,
    "median": step_median,
    "trimmed_mean": step_trimmed_mean,
    "krum": step_krum,
    "clip_fixed": step_clip_fixed,
}


def initial_state(strategy, d, p):
    """Initial optimiser state, float32 like all stored state."""
    if strategy == "fedavgm":
        return {"momentum": f32(np.zeros(d))}
    if strategy in ("fedadam", "fedyogi", "fedadagrad"):
        return {"m": f32(np.zeros(d)), "v": f32(np.full(d, p["tau"] ** 2))}
    return {}


# --------------------------------------------------------------------------
# Case generation
# --------------------------------------------------------------------------

def draw_round(rng, n, d, outlier=None):
    """Fresh float32 deltas ~N(0, 0.1) and integer weights 1..100."""
    weights = rng.integers(1, 101, size=n)
    deltas = rng.normal(0.0, 0.1, size=(n, d))
    if outlier is not None:
        deltas[outlier] *= 10.0
    return f32(deltas), weights


def make_case(name, strategy, params, seed, d, n, rounds, outlier=None):
    rng = np.random.default_rng(seed)
    x = f32(rng.normal(0.0, 1.0, size=d))
    case = {"name": name, "strategy": strategy, "params": params,
            "x0": flist(x), "rounds": []}
    state = initial_state(strategy, d, params)
    c = float(params["c0"]) if strategy == "clip_adaptive" else None
    for _ in range(rounds):
        deltas, weights = draw_round(rng, n, d, outlier)
        rnd = {"deltas": fmatrix(deltas), "weights": [int(w) for w in weights]}
        if strategy == "clip_adaptive":
            # Andrew et al. 2021: clip with the C of this round, aggregate,
            # then the geometric update of C from the unclipped fraction.
            cd, clipped, _ = clip(deltas, c)
            x_new = to64(x) + weighted_mean(cd, weights)
            b = float(np.count_nonzero(~clipped)) / n
            c_after = c * math.exp(-params["clip_lr"] * (b - params["quantile"]))
            extra = {"expected_c_used": c,
                     "expected_clipped_count": int(np.count_nonzero(clipped)),
                     "expected_clipped": [bool(v) for v in clipped],
                     "expected_c": c_after}
            new_state = {}
            c = c_after
        else:
            x_new, new_state, extra = STEPS[strategy](x, state, deltas, weights, params)
        # End of round: what the coordinator stores, and the next round's start.
        x = f32(x_new)
        state = {k: f32(v) for k, v in new_state.items()}
        rnd["expected_x"] = flist(x)
        rnd["expected_state"] = {k: flist(v) for k, v in state.items()}
        rnd.update(extra)
        case["rounds"].append(rnd)
    return case


ADAPTIVE = {"eta": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}

CASES = [
    # name, strategy, params, seed, d, n, rounds, outlier index
    ("fedavg_1_round", "fedavg", {}, 101, 7, 4, 1, None),
    ("median_odd", "median", {}, 102, 6, 5, 1, None),
    ("median_even", "median", {}, 103, 6, 4, 1, None),
    ("trimmed_mean_b0.2_n5", "trimmed_mean", {"beta": 0.2}, 104, 8, 5, 1, None),
    ("trimmed_mean_b0.25_n7", "trimmed_mean", {"beta": 0.25}, 105, 5, 7, 1, None),
    ("krum_f1_m1_n5_outlier", "krum", {"f": 1, "m": 1}, 106, 10, 5, 1, 3),
    ("multikrum_f1_m3_n6", "krum", {"f": 1, "m": 3}, 107, 8, 6, 1, None),
    ("clip_fixed", "clip_fixed", {"c": 0.3}, 108, 9, 5, 1, None),
    ("fedavg_3_rounds", "fedavg", {}, 201, 5, 3, 3, None),
    ("fedavgm_3_rounds", "fedavgm", {"eta": 1.0, "momentum": 0.9}, 202, 6, 4, 3, None),
    ("fedadam_3_rounds", "fedadam", dict(ADAPTIVE), 203, 8, 5, 3, None),
    ("fedyogi_3_rounds", "fedyogi", dict(ADAPTIVE), 204, 8, 5, 3, None),
    ("fedadagrad_b1_0_3_rounds", "fedadagrad",
     {"eta": 0.01, "beta1": 0.0, "tau": 1e-3}, 205, 7, 4, 3, None),
    ("fedadagrad_b1_0.9_3_rounds", "fedadagrad",
     {"eta": 0.01, "beta1": 0.9, "tau": 1e-3}, 206, 7, 4, 3, None),
    ("clip_adaptive_3_rounds", "clip_adaptive",
     {"c0": 0.3, "quantile": 0.5, "clip_lr": 0.2}, 207, 9, 6, 3, None),
]


# --------------------------------------------------------------------------
# Self-checks: hand-checkable facts, and properties of the generated fixtures
# that keep them robust (no decision sits on a float rounding edge).
# --------------------------------------------------------------------------

def self_check():
    x0 = f32([0.0, 0.0])
    # fedavg: [0,4] w=1 and [4,0] w=3 -> [3,1]
    got, _, _ = step_fedavg(x0, {}, f32([[0, 4], [4, 0]]), [1, 3], {})
    assert np.array_equal(got, [3.0, 1.0]), got
    # median of [1],[2],[100] is 2; of [1],[2],[3],[100] is 2.5
    got, _, _ = step_median(f32([0]), {}, f32([[1], [2], [100]]), [1, 1, 1], {})
    assert got[0] == 2.0, got
    got, _, _ = step_median(f32([0]), {}, f32([[1], [2], [3], [100]]), [1] * 4, {})
    assert got[0] == 2.5, got
    # trimmed mean β=0.2, n=5 drops one each side: [1,2,3,4,100] -> 3
    assert trimmed_mean(f32([[100], [1], [4], [2], [3]]), 0.2)[0] == 3.0
    # β=0.25, n=7 -> k = 1: [-50,1,2,3,4,5,50] -> 3
    assert trimmed_mean(f32([[50], [1], [2], [-50], [3], [4], [5]]), 0.25)[0] == 3.0
    # Krum on 4 close points and one far one never picks the far one.
    pts = f32([[0, 0], [0.1, 0], [0, 0.1], [100, 100], [0.1, 0.1]])
    sel, scores = krum_select(pts, 1, 1)
    assert 3 not in sel and scores[3] == scores.max(), (sel, scores)
    sel, _ = krum_select(pts, 1, 3)
    assert 3 not in sel and len(sel) == 3
    # Krum tie: identical updates -> lower index wins.
    sel, _ = krum_select(f32([[1, 1]] * 5), 1, 2)
    assert sel == [0, 1], sel
    # Clipping [3,4] (norm 5) at C=1 -> [0.6,0.8]; [0.3,0.4] (norm 0.5) untouched.
    cd, clipped, _ = clip(f32([[3, 4], [0.3, 0.4]]), 1.0)
    assert np.allclose(cd, [[0.6, 0.8], [0.3, 0.4]], rtol=0, atol=1e-7)
    assert list(clipped) == [True, False]
    # norm exactly C is not clipped
    _, clipped, _ = clip(f32([[3, 4]]), 5.0)
    assert list(clipped) == [False]
    # Adaptive clipping: all unclipped (b = 1), γ = 0.5, η_C = 0.2 -> C·e^{-0.1}
    case = make_case("t", "clip_adaptive", {"c0": 10.0, "quantile": 0.5, "clip_lr": 0.2},
                     0, 3, 3, 1)
    assert case["rounds"][0]["expected_clipped_count"] == 0
    assert math.isclose(case["rounds"][0]["expected_c"], 10.0 * math.exp(-0.1))
    # FedAdam first step: m = (1−β1)Δ, v = β2τ² + (1−β2)Δ²
    p = dict(ADAPTIVE)
    st = initial_state("fedadam", 1, p)
    _, s, _ = step_fedadam(f32([0]), st, f32([[0.5]]), [1], p)
    assert math.isclose(s["m"][0], 0.05)
    assert math.isclose(s["v"][0], 0.99 * float(F32(1e-6)) + 0.01 * 0.25)
    # FedAdagrad β1=0: x' = x + η·Δ/(√(τ²+Δ²)+τ)
    p = {"eta": 0.01, "beta1": 0.0, "tau": 1e-3}
    got, _, _ = step_fedadagrad(f32([0]), initial_state("fedadagrad", 1, p),
                                f32([[0.5]]), [1], p)
    v = float(F32(1e-6)) + float(F32(0.5)) ** 2
    assert math.isclose(got[0], 0.01 * 0.5 / (math.sqrt(v) + 1e-3))
    # Yogi: v == Δ² leaves v unchanged (sign 0); v < Δ² grows; v > Δ² shrinks.
    p = dict(ADAPTIVE)
    for v0, expect in ((0.25, 0.25), (0.0, 0.01 * 0.25), (1.0, 1.0 - 0.01 * 0.25)):
        _, s, _ = step_fedyogi(f32([0]), {"m": f32([0]), "v": f32([v0])},
                               f32([[0.5]]), [1], p)
        assert math.isclose(s["v"][0], expect), (v0, s["v"])
    # FedAvgM with β = 0 is FedAvg scaled by η.
    got, _, _ = step_fedavgm(x0, {"momentum": f32([0, 0])}, f32([[0, 4], [4, 0]]),
                             [1, 3], {"eta": 0.5, "momentum": 0.0})
    assert np.array_equal(got, [1.5, 0.5])


def check_fixtures(cases):
    """Properties of the generated fixtures themselves."""
    by_name = {c["name"]: c for c in cases}
    for c in cases:
        for r in c["rounds"]:
            for v in r["expected_x"]:
                assert math.isfinite(v)
            # float32 round trip: every stored value is exactly a float32
            for v in r["expected_x"] + [u for row in r["deltas"] for u in row]:
                assert float(F32(v)) == v
    # Krum: the ×10 outlier (index 3) is not selected; selection has a clear
    # margin, so float error on the Rust side cannot flip it.
    for name in ("krum_f1_m1_n5_outlier", "multikrum_f1_m3_n6"):
        c = by_name[name]
        r = c["rounds"][0]
        s = sorted(r["expected_scores"])
        m = c["params"]["m"]
        assert (s[m] - s[m - 1]) / s[m] > 1e-3, (name, s)
    assert 3 not in by_name["krum_f1_m1_n5_outlier"]["rounds"][0]["expected_selected"]
    # Clipping cases mix clipped and unclipped updates, and no norm sits on C.
    r = by_name["clip_fixed"]["rounds"][0]
    assert 0 < sum(r["expected_clipped"]) < len(r["expected_clipped"])
    norms = l2_norms(np.array(r["deltas"], dtype=F32))
    assert np.all(np.abs(norms - 0.3) / 0.3 > 1e-4)
    for r in by_name["clip_adaptive_3_rounds"]["rounds"]:
        assert 0 < r["expected_clipped_count"] < len(r["weights"])
        norms = l2_norms(np.array(r["deltas"], dtype=F32))
        assert np.all(np.abs(norms - r["expected_c_used"]) / r["expected_c_used"] > 1e-4)
    # Yogi: both branches of sign(v − Δ²) are exercised across rounds 2..3.
    c = by_name["fedyogi_3_rounds"]
    signs = set()
    for prev, r in zip(c["rounds"], c["rounds"][1:]):
        delta = weighted_mean(np.array(r["deltas"], dtype=F32), r["weights"])
        v = np.array(prev["expected_state"]["v"], dtype=F64)
        signs |= set(np.sign(v - delta * delta).tolist())
    assert signs >= {-1.0, 1.0}, signs


def main():
    self_check()
    cases = [make_case(*spec) for spec in CASES]
    check_fixtures(cases)
    out = {"generator": "tests/strategies/reference.py",
           "numpy": np.__version__,
           "cases": cases}
    json.dump(out, sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
