"""Reference numbers for the Rust RDP accountant (common/core/src/privacy/accountant.rs).

Run with the venv that has dp-accounting (and, for the Opacus comparison, the
opacus wheel installed with --no-deps; only its pure numpy/scipy module
`opacus/accountants/analysis/rdp.py` is loaded, by file path, so torch is not
needed):

    python3 -m venv /tmp/dpvenv
    /tmp/dpvenv/bin/pip install dp-accounting
    /tmp/dpvenv/bin/pip install --no-deps opacus
    /tmp/dpvenv/bin/python tests/privacy/reference.py

Three independent sources are printed:

* `dp_accounting` (Google), `rdp_privacy_accountant`: the per-order RDP of the
  Poisson-subsampled Gaussian and `RdpAccountant` epsilons.
* `opacus.accountants.analysis.rdp` (Meta): `_compute_rdp`, `compute_rdp`,
  `get_privacy_spent`.
* `exact`: an arbitrary-precision evaluation with mpmath (60 digits) of the
  defining quantity A_alpha = E_{z ~ N(0, s^2)} [((1 - q) + q exp((2z - 1) /
  (2 s^2)))^alpha] (Mironov, Talwar, Zhang 2019, Sec. 3): the finite binomial
  sum for integer alpha, numerical integration for fractional alpha.  RDP =
  ln(A_alpha) / (alpha - 1).  The float64 inputs are converted exactly, so these
  are the true values for the very doubles the Rust code receives.

The Rust tests contain the printed numbers; they never run Python.
"""

import importlib.util
import math
import os
import sys
from importlib import metadata

import mpmath as mp
import numpy as np

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant as dp_rdp

mp.mp.dps = 60

# Load Opacus' analysis module without importing the torch-dependent package.
_OPACUS_RDP = os.path.join(
    os.path.dirname(dp_accounting.__file__), "..", "opacus", "accountants",
    "analysis", "rdp.py")
_spec = importlib.util.spec_from_file_location("opacus_rdp", _OPACUS_RDP)
op_rdp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(op_rdp)

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
DELTA = 1e-5


def exact_rdp(q, sigma, alpha):
    """True RDP of one Poisson-subsampled Gaussian step, to ~40 digits."""
    q, s, a = mp.mpf(q), mp.mpf(sigma), mp.mpf(alpha)
    if q == 0:
        return mp.mpf(0)
    if q == 1:
        return a / (2 * s * s)
    if a == mp.floor(a):
        n = int(a)
        total = mp.fsum(
            mp.binomial(n, i) * q**i * (1 - q)**(n - i)
            * mp.exp(mp.mpf(i * i - i) / (2 * s * s))
            for i in range(n + 1))
    else:
        def integrand(z):
            ratio = (1 - q) + q * mp.exp((2 * z - 1) / (2 * s * s))
            return mp.npdf(z, 0, s) * ratio**a
        z0 = s * s * mp.log(1 / q - 1) + mp.mpf(0.5)
        cuts = sorted({-40 * s, mp.mpf(0), mp.mpf(0.5), mp.mpf(1), z0,
                       a, 40 * s + a + abs(z0)})
        total = mp.quad(integrand, [-mp.inf] + cuts + [mp.inf], maxdegree=10)
    return mp.log(total) / (a - 1)


def exact_epsilon(orders, rdp, delta):
    """Conversion used by dp-accounting (Balle et al. 2020, Prop. 12), exact."""
    best = (mp.inf, None)
    d = mp.mpf(delta)
    for a, r in zip(orders, rdp):
        a = mp.mpf(a)
        if d * d + mp.expm1(-r) > 0:
            eps = mp.mpf(0)
        else:
            eps = r + mp.log1p(-1 / a) - (mp.log(d) + mp.log(a)) / (a - 1)
        if eps < best[0]:
            best = (eps, a)
    return max(best[0], 0), best[1]


def dp_accounting_epsilon(q, sigma, steps, orders, delta):
    acc = dp_rdp.RdpAccountant(orders)
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            q, dp_accounting.GaussianDpEvent(sigma)), steps))
    return acc.get_epsilon_and_optimal_order(delta)


def opacus_epsilon(q, sigma, steps, orders, delta):
    rdp = op_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps,
                             orders=orders)
    return op_rdp.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)


def basic_epsilon(orders, rdp, delta):
    """Mironov 2017 Prop. 3 (the conversion behind the published tables)."""
    eps = [r - math.log(delta) / (a - 1) for a, r in zip(orders, rdp)]
    i = int(np.argmin(eps))
    return eps[i], orders[i]


def section(title):
    print()
    print("=" * 78)
    print(title)
    print("=" * 78)


def main():
    import warnings
    warnings.filterwarnings("ignore")
    import absl.logging
    absl.logging.set_verbosity(absl.logging.ERROR)

    section("versions")
    print("python", sys.version.split()[0])
    for pkg in ("dp-accounting", "opacus", "numpy", "scipy", "mpmath"):
        print(pkg, metadata.version(pkg))

    section("erfc / log erfc (mpmath, 60 digits)")
    for x in [0.5, 3.0, 10.0, -0.3, 0.2, 1.0, 2.5, 5.0, 26.0]:
        print(f"erfc({x!r}) = {float(mp.erfc(x))!r}")
    for x in [-30.0, -5.0, -1.0, -0.3, 0.0, 0.2, 0.46875, 0.5, 1.0, 3.9,
              4.1, 10.0, 26.0, 30.0, 100.0, 1e3, 1e5, 1e10]:
        print(f"log_erfc({x!r}) = {float(mp.log(mp.erfc(x)))!r}")

    section("per-step RDP grid: (q, sigma, alpha, dp_accounting, opacus, exact)")
    for q in [0.001, 0.01, 0.1, 0.5, 1.0]:
        for sigma in [0.5, 1.0, 4.0]:
            for alpha in [1.5, 2.0, 2.5, 8.0, 32.0, 63.0]:
                dpa = float(dp_rdp._compute_rdp_poisson_subsampled_gaussian(
                    q, sigma, [alpha])[0])
                opa = float(op_rdp._compute_rdp(q, sigma, alpha))
                ex = float(exact_rdp(q, sigma, alpha))
                print(f"({q!r}, {sigma!r}, {alpha!r}, {dpa!r}, {opa!r}, "
                      f"{ex!r}),")

    section("federated epsilons, default (Opacus) orders, delta=1e-5: "
            "(q, sigma, steps, exact_eps, exact_order, dp_acc_eps, "
            "dp_acc_order, opacus_eps, opacus_order)")
    for q in [0.1, 0.2]:
        for sigma in [0.7, 1.0, 2.0]:
            per_step = [exact_rdp(q, sigma, a) for a in ORDERS]
            for steps in [10, 100, 1000]:
                ex_eps, ex_order = exact_epsilon(
                    ORDERS, [r * steps for r in per_step], DELTA)
                d_eps, d_order = dp_accounting_epsilon(q, sigma, steps,
                                                       ORDERS, DELTA)
                o_eps, o_order = opacus_epsilon(q, sigma, steps, ORDERS,
                                                DELTA)
                print(f"({q!r}, {sigma!r}, {steps}, {float(ex_eps)!r}, "
                      f"{float(ex_order)!r}, {float(d_eps)!r}, "
                      f"{float(d_order)!r}, {float(o_eps)!r}, "
                      f"{float(o_order)!r}),")

    section("published MNIST settings, default orders, delta=1e-5: "
            "(source, q, sigma, steps, basic_eps@order, opacus_balle_eps@order, "
            "dp_accounting_eps@order)")
    settings = [
        ("TF Privacy tutorials/README.md row 3 (eps 3.01)", 256 / 60000,
         1.1, 14062),
        ("TF Privacy tutorials/README.md row 2 (eps 1.19)", 256 / 60000,
         1.3, 3515),
        ("TF Privacy tutorials/README.md row 4 (eps 7.10)", 256 / 60000,
         0.7, 10546),
        ("Opacus examples/mnist_README.md epoch 1 (eps 0.71, a 18)", 0.004,
         1.3, 250),
        ("Opacus examples/mnist_README.md epoch 15 (eps 1.16, a 17)", 0.004,
         1.3, 3750),
        ("Opacus examples/mnist_README.md (2.91)", 0.004, 1.1, 15000),
        ("Opacus examples/mnist_README.md (6.86)", 0.004, 0.7, 11250),
    ]
    for name, q, sigma, steps in settings:
        rdp = op_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps,
                                 orders=ORDERS)
        b_eps, b_order = basic_epsilon(ORDERS, rdp, DELTA)
        o_eps, o_order = op_rdp.get_privacy_spent(orders=ORDERS, rdp=rdp,
                                                  delta=DELTA)
        d_eps, d_order = dp_accounting_epsilon(q, sigma, steps, ORDERS, DELTA)
        print(f"{name}: q={q!r} sigma={sigma} steps={steps}: "
              f"basic {float(b_eps)!r} @ {float(b_order)}; "
              f"opacus {float(o_eps)!r} @ {float(o_order)}; "
              f"dp_accounting {float(d_eps)!r} @ {float(d_order)}")


if __name__ == "__main__":
    main()
