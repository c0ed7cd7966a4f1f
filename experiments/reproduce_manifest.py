"""The reproduction manifest: every claim of REPRODUCTION.md as runs and the numbers they must give.

Each `Entry` (`experiments.reproduce_extract`) is a run of an experiment from a committed flagfile
plus overrides, under a run name, and the quantities read from its records: the paper's value
(text), the value recorded in REPRODUCTION.md (as written in the claim's section: a test checks
that it appears there), a tolerance with its reason and an extractor. ``quick`` entries make up
``--quick``: reduced settings (fewer radii, dimensions, seeds or epochs of the same flagfile) that
still measure the claim's quantity, a few minutes each and ~10 min in all on 2 cores (9 min 49 s
from scratch on a fresh clone); the other entries are the full CPU-sized runs of REPRODUCTION.md
(long: 3-45 min each). Entries with the same experiment, flagfile and overrides share one run
folder (claim 5 reads the scans of 1 and 2).

Adding claim N: a line ``N: "title"`` in CLAIMS and its entries in ENTRIES, e.g.

    Entry(N, "mnist_new", "radius_scan", "mnist_new", minutes=4, quantities=(
        Q("frac+ at r_X, d = 10", "~0.9", "0.91", x.mean("frac_pos", radius=0, d=10), frac(10, 5)),)),
    Entry(N, "mnist_new_quick", "radius_scan", "mnist_new", quick=True, minutes=1,
          overrides=(AT_RX,), quantities=(...)),

then ``python -m experiments.reproduce --check --claims=N --quick --data_dir=...`` and write the quick
entry's values into the claim's section of REPRODUCTION.md as a "Quick check" line. tests/test_reproduce.py
fails while a claim section has no entries (a quick one among them) or a recorded value is not written
in its section (as a number of its own: "0.86", "707", "+2.5"). A claim that no cut-down run can
measure in a few minutes is listed in NO_QUICK with the reason instead of a quick entry.
"""

from __future__ import annotations

from experiments import reproduce_extract as x
from experiments.reproduce_extract import Entry, Quantity, Tol

Q = Quantity


def frac(d: int, seeds: int) -> Tol:
    """frac+ (a seed mean of counts / d): one eigenvalue of one seed is 1 / (d S)."""
    step = 1 / (d * seeds)
    return Tol(round(step + 0.005, 3), 0, f"float32 across XLA versions and seed modes: an eigenvalue near "
               f"0 may change sign (1/(d S) = {step:.3f}), + the written rounding")


TRF = Tol(0.02, 0.01, "float32 across XLA versions and seed modes; written to 2-3 decimals")
ACC = Tol(0.02, 0, "training amplifies float32 rounding across XLA versions (seed-mean test accuracy)")
ACC1 = Tol(0.03, 0, "training amplifies float32 rounding across XLA versions (one seed)")
EXACT = Tol(0.01, 0, "an exact law or a grid value, read from float32 records")
LOSS = Tol(0.001, 0, "float32 loss near log 10, mean over points and seeds")
RADIUS = Tol(0.01, 0.03, "final radius of a float32 training run")
RATIO = Tol(0, 0.1, "ratio of float32 norms that differ by orders of magnitude")
ALPHA = Tol(0.02, 0, "power-law fit of a float32 training run's radius curve")
DINT = Tol(0, 0.16, "first grid d reaching the goal; seed means near it move it a grid step (16/decade)")
DIAG = Tol(0.002, 0, "float32 rounding of curvatures that differ up to 1e9 between the cells of a class")
SPREAD = Tol(0.05, 0.1, "largest difference over many cells and seeds, float32")
SLQ = Tol(0.02, 0.03, "SLQ of a float32 Hessian (80 Lanczos steps, 5 probes) across XLA versions; the Ritz "
          "values and weights of the outliers move with the rounding; written to 2-3 digits")
GRID_D = Tol(0, 0.34, "the first evaluated d with P_s >= 0.5 of 6 float32 trainings; one trial's outcome "
             "near the target moves it one grid step (8/decade: x1.33)")
LARSEN = Tol(0, 0.03, "eq. (4) from float32 Lanczos / SLQ of G at float32 training end points")
EFFECT = Tol(0.0005, 0, "difference of means of 48 x 8 float32 trainings across XLA versions, "
             "written to 4 decimals")
P_WELCH = Tol(0.0003, 0, "Welch p is steep in t (here ~4): a float32 shift of the effect by 0.0003 "
              "moves p by up to 2x; the check asks p < 0.0006")

CLAIMS = {
    1: "the Goldilocks zone of the MNIST MLP (Fort & Scherlis 2019, Fig. 3)",
    2: "tanh, CIFAR-10, a CNN, and width and depth",
    3: "training confined to hyperplanes and hyperspheres",
    4: "radius dynamics during training (the poster)",
    5: "the loss at the scan points: log 10 inside, r^L outside",
    6: "weight scale = softmax temperature in a bias-free net (Vysogorets et al. 2024)",
    7: "zone of LeNet-300-100 and LeNet-5, its Gauss-Newton origin, trainability",
    8: "ResNet-20 with BatchNorm and a ViT with LayerNorm",
    9: "intrinsic dimension d_int90 of the MNIST FC net (Li et al. 2018)",
    10: "the full-space spectral density across radii",
    11: "the threshold training dimension predicted from the Hessian (Larsen et al. 2021)",
    12: "selecting initialisations by convexity (Fort & Scherlis 2019)",
}
# Claims without a quick entry, and why no cut-down run measures their quantities in a few minutes.
NO_QUICK = {
    10: "the density needs the full MNIST MLP's Hessian (D = 199,210) at each point: 5 x 80 Lanczos steps "
        "per point already take minutes, and fewer steps or probes do not resolve the outliers and the edge",
    11: "d* needs an adaptive search of trainings over d and the curvature of full-space solutions: "
        "no cut-down run measures it in a few minutes",
    12: "the effect is 0.004 in test loss against a per-init SD of 0.0036: fewer inits or orders than the "
        "powered 24 + 24 x 8 runs cannot measure it",
}
AT_RX = "--log10_r2_over_rx2=0,0,1"
M = x.mean


def _at(radius: float) -> str:
    return "r_X" if radius == 0 else f"x = {radius:+g}"


def _scan(seeds: int, *cells, radius: float = 0) -> tuple:
    """frac+ and Tr/F at one radius: cells (d, paper frac+, recorded, paper Tr/F, recorded); "" skips."""
    where = _at(radius)
    out = []
    for d, p_frac, frac_v, p_trf, trf_v in cells:
        if frac_v:
            out.append(Q(f"frac+ at {where}, d = {d}", p_frac, frac_v, M("frac_pos", radius=radius, d=d),
                         frac(d, seeds)))
        if trf_v:
            out.append(Q(f"Tr/F at {where}, d = {d}", p_trf, trf_v, M("trace_over_frob", radius=radius, d=d),
                         TRF))
    return tuple(out)


def _loss(inside: str | None, p: str, paper_p: str = "-") -> tuple:
    law = (Q("loss exponent p, x >= 1", paper_p, p, x.loss_law("p"), EXACT),)
    if inside is None:
        return law
    return (Q("loss for x <= -1", "log 10", inside, x.loss_law("inside_mean"), LOSS), *law)


def _acc(mode: str, d: int, *cells) -> tuple:
    """Final test accuracy of subspace training: cells (x, recorded)."""
    return tuple(Q(f"{mode} d = {d} at {_at(r)}", "-", v, M("final_test_accuracy", mode=mode, d=d, radius=r),
                   ACC) for r, v in cells)


def _dyn(mode: str, *cells, tol: Tol = ACC) -> tuple:
    """Radius dynamics: cells (r0 / r_X, recorded final test accuracy)."""
    return tuple(Q(f"{mode} r0 = {r0:.3g} r_X: final test acc.", "-", v,
                   x.row("final_test_accuracy", mode=mode, r0=r0), tol) for r0, v in cells)


def _radius(mode: str, r0: float, value: str) -> Quantity:
    return Q(f"{mode} r0 = {r0:.3g} r_X: final radius / r_X", "-", value,
             x.row("final_radius_over_rx", mode=mode, r0=r0), RADIUS)


def _alpha(value: str) -> Quantity:
    return Q("free r0 = 0.01 r_X: alpha", "sqrt(t): 1", value, x.row("alpha.alpha", mode="free", r0=0.01),
             ALPHA)


def _diag(key: str, d: int):
    return x.diagonal_spread(key, d=d, degree=3)  # LeNet-300-100 without biases: degree 3


def _at_t(key: str, radius: float, temperature: float):
    return M(key, radius=radius, temperature=temperature, d=50)


def _gn(values, d: int = 10) -> tuple:
    """Tr/||G||_F of P^T G P at x = -3, 0, +2."""
    return tuple(Q(f"G: Tr/F at {_at(r)}, d = {d}", "-", v, M("gn_trace_over_frob", radius=r, d=d), TRF)
                 for r, v in zip((-3, 0, 2), values))


def _residual(lo: str, hi: str) -> tuple:
    """The range of Tr/||R||_F of the residual P^T R P over the scan (d = 10)."""
    return tuple(Q(f"R: {which} Tr/F over the scan, d = 10", "~0", v,
                   x.extreme("res_trace_over_frob", which, d=10), TRF)
                 for which, v in (("min", lo), ("max", hi)))


def _gh(radius: float, value: str) -> Quantity:
    return Q(f"G/H: ||G||_F / ||H||_F at {_at(radius)}", "-", value, x.ratio("gn_frob", "frob", radius=radius,
                                                                             d=10), RATIO)


def _vit() -> tuple:
    """The ViT at r_X: H, G, G/H and the residual R (d = 10, 3 seeds)."""
    return _scan(3, (10, "lower", "0.53", "lower", "0.48")) + (
        Q("G: Tr/F at r_X", "-", "2.52", M("gn_trace_over_frob", radius=0, d=10), TRF), _gh(0, "1.39"),
        Q("R: frac+ at r_X", "negative", "0.13", M("res_frac_pos", radius=0, d=10), frac(10, 3)),
        Q("R: Tr/F at r_X", "negative", "-2.42", M("res_trace_over_frob", radius=0, d=10), TRF))


CORNER = Q("biases: Tr/F at (x = -3, T = 10^-4.5), d = 50", "-", "1.10",
           _at_t("trace_over_frob", -3, 10 ** -4.5), TRF)
FAR_INSIDE = (10, "~0.5", "0.52", "~0", "0.61")
FS_RX = ((10, "~0.99", "0.980", "~2.9", "2.735"), (50, "~0.88", "0.784", "~4.9", "4.480"))
MNIST_FS_QUICK = dict(name="mnist_fs_quick", experiment="radius_scan", flagfile="mnist_fs", quick=True,
                      minutes=1.5, overrides=("--log10_r2_over_rx2=-4,4,9", "--dims=10,50"))
CIFAR_FS = ((10, "zone", "1.000", "zone", "3.03"), (100, "zone", "0.894", "zone", "7.23"))
TANH = ((10, "zone", "0.660", "zone", "1.46"), (100, "zone", "0.544", "zone", "1.67"))
CNN = ((10, "zone", "0.767", "zone", "1.94"), (50, "zone", "0.607", "zone", "2.49"))
SUBSPACE_QUICK = (("hyperplane", 100, (-4, "0.614"), (0, ".577"), (4, ".110")),
                  ("hypersphere", 100, (-4, ".102"), (0, ".532"), (4, ".113")))
LR002 = (0.0316227766, "0.765"), (1, "0.798"), (3.16227766, "0.663"), (31.6227766, "0.636")
RESNET_RX = (10, "zone?", "0.00", "zone?", "-2.58")

ENTRIES: tuple[Entry, ...] = (
    # ---------------------------------------------------------------- claim 1
    Entry(1, "mnist_fs", "radius_scan", "mnist_fs", minutes=4.2, quantities=_scan(
        5, *FS_RX, (100, "~0.80", "0.692", "~5.9", "4.970")) + _scan(5, FAR_INSIDE, radius=-4)
        + (Q("frac+ zone upper x, d = 10", "~2", "+2.5", x.zone(10, "frac_pos", "extent_hi"), EXACT),)),
    Entry(1, "metric_inv_std", "radius_scan", "mnist_metric", minutes=3,
          overrides=("--projection_metric=inv_std",),
          quantities=_scan(16, (10, "~0.99", "0.994", "~2.9", "2.88"), (50, "~0.88", "0.859", "~4.9", "5.10"),
                           (100, "~0.80", "0.768", "~5.9", "5.99"))),
    Entry(1, **MNIST_FS_QUICK, quantities=_scan(5, *FS_RX) + _scan(5, FAR_INSIDE, radius=-4)
          + _scan(5, (10, "~0.5", "0.48", "~0", "0.02"), radius=4)),
    # ---------------------------------------------------------------- claim 2
    Entry(2, "mnist_tanh", "radius_scan", "mnist_tanh", minutes=4.6, quantities=_scan(5, *TANH) + (
        Q("Tr/F zone upper x, d = 100", "-", "+0.5", x.zone(100, "trace_over_frob", "extent_hi"), EXACT),)),
    Entry(2, "cifar10_fs", "radius_scan", "cifar10_fs", minutes=6.8, quantities=_scan(5, *CIFAR_FS) + (
        Q("frac+ zone upper x, d = 100", "-", "+1.5", x.zone(100, "frac_pos", "extent_hi"), EXACT),)),
    Entry(2, "cnn_fs_cpu", "radius_scan", "cnn_cpu", minutes=4, quantities=_scan(3, *CNN)),
    Entry(2, "mnist_arch_200x3", "radius_scan", "mnist_arch_200x3", minutes=24.6,
          quantities=_scan(5, (100, "-", "0.67", "-", "4.60"))),
    Entry(2, "mnist_arch_100x4", "radius_scan", "mnist_arch_100x4", minutes=13.5,
          quantities=_scan(5, (100, "-", "0.64", "-", "4.12"))),
    Entry(2, "mnist_arch_50x8", "radius_scan", "mnist_arch_50x8", minutes=4.9,
          quantities=_scan(5, (100, "-", "0.56", "-", "2.06"))),
    Entry(2, "cifar10_fs_quick", "radius_scan", "cifar10_fs", quick=True, minutes=1.5, overrides=(AT_RX,),
          quantities=_scan(5, *CIFAR_FS)),
    Entry(2, "mnist_tanh_quick", "radius_scan", "mnist_tanh", quick=True, minutes=1,
          overrides=(AT_RX, "--dims=10,100"), quantities=_scan(5, *TANH)),
    Entry(2, "cnn_fs_cpu_quick", "radius_scan", "cnn_cpu", quick=True, minutes=1, overrides=(AT_RX,),
          quantities=_scan(3, *CNN)),
    Entry(2, "mnist_arch_50x8_quick", "radius_scan", "mnist_arch_50x8", quick=True, minutes=0.7,
          overrides=(AT_RX, "--dims=100"), quantities=_scan(5, (100, "-", "0.56", "-", "2.06"))),
    # ---------------------------------------------------------------- claim 3
    Entry(3, "mnist_subspace_cpu", "train_subspace", "mnist_subspace_cpu", minutes=13.6, quantities=_acc(
        "hyperplane", 100, (-1, ".652"), (0, ".577"), (1, ".376"), (4, ".110"))
        + _acc("hypersphere", 100, (-4, ".102"), (0, ".532"), (4, ".113"))
        + _acc("hyperplane", 1000, (0, ".891"))),
    Entry(3, "mnist_subspace_cpu_quick", "train_subspace", "mnist_subspace_cpu", quick=True, minutes=2,
          overrides=("--log10_r2_over_rx2=-4,4,3", "--dims=100"),
          quantities=sum((_acc(*cells) for cells in SUBSPACE_QUICK), ())),
    # ---------------------------------------------------------------- claim 4
    Entry(4, "cifar10_chang", "radius_dynamics", "cifar10_chang", minutes=41.8, quantities=(
        _radius("free", 0.01, "4.66"), _radius("free", 10, "10.1"), _radius("free", 100, "98.5"),
        _alpha("0.928"),
        Q("free r0 = 0.01 r_X: measured / random walk", "1", "15.7",
          x.row("rw_ratio_constant", mode="free", r0=0.01), RATIO),
    ) + _dyn("free", (0.01, "0.522"), (10, "0.179"), tol=ACC1)
        + _dyn("fixed", (0.01, "0.150"), (1, "0.495"), (100, "0.347"), tol=ACC1)),
    Entry(4, "cifar10_chang_cpu", "radius_dynamics", "cifar10_chang_cpu", minutes=16.9, quantities=(
        _radius("free", 0.01, "3.81"), _radius("free", 10, "9.91"), _alpha("0.916"),
    ) + _dyn("free", (0.01, "0.517"), tol=ACC1) + _dyn("fixed", (1, "0.489"), tol=ACC1)),
    Entry(4, "cifar10_chang_cpu_quick", "radius_dynamics", "cifar10_chang_cpu", quick=True, minutes=1.5,
          overrides=("--r0_over_rx=0.01,10", "--epochs=1"), quantities=(
        _radius("free", 0.01, "1.30"), _radius("free", 10, "9.92"), _alpha("0.919"),
    ) + _dyn("free", (0.01, "0.458"), (10, "0.315"), tol=ACC1)
        + _dyn("fixed", (0.01, "0.123"), (10, "0.315"), tol=ACC1)),
    # ---------------------------------------------------------------- claim 5
    Entry(5, "mnist_fs", "radius_scan", "mnist_fs", minutes=4.2, quantities=_loss("2.30286", "3.000")),
    Entry(5, "cifar10_fs", "radius_scan", "cifar10_fs", minutes=6.8, quantities=_loss("2.30252", "3.000")),
    *(Entry(5, f"mnist_arch_{arch}", "radius_scan", f"mnist_arch_{arch}", minutes=minutes,
            quantities=_loss(None, p))
      for arch, minutes, p in (("200x3", 24.6, "4.000"), ("100x4", 13.5, "5.000"), ("50x8", 4.9, "9.000"))),
    Entry(5, "mnist_tanh", "radius_scan", "mnist_tanh", minutes=4.6, quantities=_loss(None, "1.027")),
    Entry(5, "cnn_fs_cpu", "radius_scan", "cnn_cpu", minutes=4, quantities=_loss(None, "2.999")),
    Entry(5, **MNIST_FS_QUICK, quantities=_loss("2.30300", "3.000")),
    # ---------------------------------------------------------------- claim 6
    Entry(6, "fmnist_lenet300_temperature", "radius_scan", "fmnist_lenet300_temperature", minutes=4,
          quantities=(
        Q("frac+ max difference on a diagonal, d = 10", "0", "0", _diag("frac_pos", 10), DIAG),
        Q("Tr/F max difference on a diagonal, d = 10", "0", "0.0007", _diag("trace_over_frob", 10), DIAG),
        Q("Tr/F max difference on a diagonal, d = 50", "0", "0.0003", _diag("trace_over_frob", 50), DIAG),
        Q("frac+ at (r_X, T = 1), d = 50", "-", "0.71", _at_t("frac_pos", 0, 1), frac(50, 5)),
        Q("Tr/F at (r_X, T = 1), d = 50", "-", "3.72", _at_t("trace_over_frob", 0, 1), TRF))),
    Entry(6, "fmnist_lenet300_bias_temperature", "radius_scan", "fmnist_lenet300_bias_temperature", minutes=4,
          quantities=(
        Q("biases: frac+ max difference, d = 10", "-", "0.10", _diag("frac_pos", 10), SPREAD),
        Q("biases: Tr/F max difference, d = 10", "-", "0.83", _diag("trace_over_frob", 10), SPREAD),
        Q("biases: Tr/F max difference, d = 50", "-", "3.3", _diag("trace_over_frob", 50), SPREAD),
        Q("biases: Tr/F at (r_X, T = 1), d = 50", "-", "3.95", _at_t("trace_over_frob", 0, 1), TRF),
        CORNER)),
    Entry(6, "fmnist_lenet300_temperature_quick", "radius_scan", "fmnist_lenet300_temperature", quick=True,
          minutes=1, overrides=("--log10_r2_over_rx2=-1,1,3", "--temperatures=0.0316227766,1,31.6227766",
                                "--dims=50"), quantities=(
        Q("frac+ max difference on a diagonal, d = 50", "0", "0", _diag("frac_pos", 50), DIAG),
        Q("Tr/F max difference on a diagonal, d = 50", "0", "4.5e-6", _diag("trace_over_frob", 50), DIAG),
        Q("Tr/F at (r_X, T = 1), d = 50", "-", "3.72", _at_t("trace_over_frob", 0, 1), TRF))),
    Entry(6, "fmnist_lenet300_bias_temperature_quick", "radius_scan", "fmnist_lenet300_bias_temperature",
          quick=True, minutes=1, overrides=("--log10_r2_over_rx2=-3,-1,3", "--dims=50",
                                            "--temperatures=3.16227766e-5,0.001,0.0316227766"), quantities=(
        Q("biases: Tr/F max difference, d = 50", "-", "2.97", _diag("trace_over_frob", 50), SPREAD),
        CORNER)),
    # ---------------------------------------------------------------- claim 7
    Entry(7, "fmnist_lenet300_zone", "radius_scan", "fmnist_lenet300_zone", minutes=4, quantities=(
        Q("peak frac+, d = 10", "zone", "0.86", x.zone(10, "frac_pos", "peak"), frac(10, 5)),
        Q("peak Tr/F, d = 10", "zone", "2.49", x.zone(10, "trace_over_frob", "peak"), TRF),
        Q("peak frac+, d = 50", "zone", "0.71", x.zone(50, "frac_pos", "peak"), frac(50, 5)),
        Q("peak Tr/F, d = 50", "zone", "3.70", x.zone(50, "trace_over_frob", "peak"), TRF),
        Q("frac+ zone upper x, d = 10", "-", "+2.0", x.zone(10, "frac_pos", "extent_hi"), EXACT),
        *_gn(("2.99", "2.93", "1.73")), *_residual("-0.09", "0.00"),
        _gh(-3, "1e-4"), _gh(0, "0.86"), _gh(3, "0.39"),
    ) + _loss(None, "3.000", "3 (degree)")),
    Entry(7, "cifar10_lenet5_zone", "radius_scan", "cifar10_lenet5_zone", minutes=22, quantities=(
        Q("peak frac+, d = 10", "zone", "0.90", x.zone(10, "frac_pos", "peak"), frac(10, 3)),
        Q("peak Tr/F, d = 10", "zone", "2.11", x.zone(10, "trace_over_frob", "peak"), TRF),
        Q("peak frac+, d = 50", "zone", "0.73", x.zone(50, "frac_pos", "peak"), frac(50, 3)),
        *_gn(("2.75", "2.63")),
    ) + _loss(None, "5.000", "5 (degree)")),
    Entry(7, "fmnist_lenet300_trainability", "radius_dynamics", "fmnist_lenet300_trainability", minutes=2.7,
          quantities=_dyn("free", (0.0316227766, "0.102"), (0.316227766, "0.810"), (1, "0.812"),
                          (3.16227766, "0.709"), (10, "0.640"))),
    Entry(7, "cifar10_lenet5_trainability", "radius_dynamics", "cifar10_lenet5_trainability", minutes=10.3,
          quantities=_dyn("free", (1, "0.295"), (3.16227766, "0.106"), (10, "0.104"))),
    Entry(7, "cifar10_lenet5_trainability_lr001", "radius_dynamics", "cifar10_lenet5_trainability",
          minutes=13.4, overrides=("--lr=0.01",),
          quantities=_dyn("free", (0.316227766, "0.178"), (1, "0.194"), (10, "0.131"))),
    Entry(7, "fmnist_lenet300_trainability_lr002", "radius_dynamics", "fmnist_lenet300_trainability",
          quick=True, minutes=1.4, overrides=("--lr=0.02",),
          quantities=_dyn("free", *LR002) + (_radius("free", 0.0316227766, "0.46"),)),
    Entry(7, "fmnist_lenet300_zone_quick", "radius_scan", "fmnist_lenet300_zone", quick=True, minutes=1,
          overrides=("--log10_r2_over_rx2=-3,3,7", "--dims=10"), quantities=_scan(
              5, (10, "zone", "0.86", "zone", "2.49")) + _gn(("2.99", "2.93", "1.73"))
          + _residual("-0.09", "0.00")
          + _loss(None, "3.000", "3 (degree)")),
    # ---------------------------------------------------------------- claim 8
    Entry(8, "cifar10_resnet20_cpu", "radius_scan", "cifar10_resnet20_cpu", minutes=17.8, quantities=_scan(
        3, RESNET_RX) + (Q("G: Tr/F at x = -1", "-", "2.62", M("gn_trace_over_frob", radius=-1, d=10), TRF),
                         _gh(-3, "0.28"), _gh(0, "0.053"),
                         Q("loss at x = +3", "-", "2477", M("loss", radius=3, d=10), RATIO))),
    Entry(8, "cifar10_resnet20_frozen_cpu", "radius_scan", "cifar10_resnet20_cpu", minutes=11.5,
          overrides=("--model_state=frozen",), quantities=(
        Q("frozen: G Tr/F at r_X", "-", "1.86", M("gn_trace_over_frob", radius=0, d=10), TRF),
        Q("frozen: loss at x = +1", "-", "3.7e15", M("loss", radius=1, d=10), RATIO))),
    Entry(8, "cifar10_vit_tiny_cpu", "radius_scan", "cifar10_vit_tiny_cpu", minutes=4, quantities=_vit()),
    Entry(8, "cifar10_resnet20_subspace_cpu", "train_subspace", "cifar10_resnet20_subspace_cpu", minutes=15.3,
          quantities=_acc("hyperplane", 100, (-1, "0.215"), (2, "0.091"))
          + _acc("hypersphere", 100, (0, "0.190"))),
    Entry(8, "cifar10_vit_tiny_subspace_cpu", "train_subspace", "cifar10_vit_tiny_subspace_cpu", minutes=4.7,
          quantities=_acc("hyperplane", 100, (0, "0.257"), (1, "0.098"))
          + _acc("hypersphere", 100, (0, "0.252"))),
    Entry(8, "cifar10_vit_tiny_cpu_quick", "radius_scan", "cifar10_vit_tiny_cpu", quick=True, minutes=1.5,
          overrides=(AT_RX,), quantities=_vit()),
    Entry(8, "cifar10_resnet20_cpu_quick", "radius_scan", "cifar10_resnet20_cpu", quick=True, minutes=3,
          overrides=(AT_RX,), quantities=_scan(3, RESNET_RX)),
    # ---------------------------------------------------------------- claim 9
    Entry(9, "mnist_dint90_cpu", "threshold_dimension", "mnist_dint90_cpu", minutes=4.9, quantities=(
        Q("d_int90 (grid)", "~750", "707", x.d_int("grid"), DINT),
        Q("d_int90 (interpolated)", "~750", "692.7", x.d_int("interpolated"), DINT),
        Q("full-space baseline test acc.", "-", "0.9787", x.analysis("baseline_test_accuracy"), ACC),
        Q("test acc. at d = 707", "-", "0.882", M("final_test_accuracy", start=0, d=707), ACC))),
    Entry(9, "mnist_dint90_cpu_quick", "threshold_dimension", "mnist_dint90_cpu", quick=True, minutes=1.5,
          overrides=("--num_seeds=2", "--epochs=3", "--bootstrap=100"), quantities=(
        Q("d_int90 (grid)", "~750", "707", x.d_int("grid"), DINT),
        Q("d_int90 (interpolated)", "~750", "659.8", x.d_int("interpolated"), DINT),
        Q("full-space baseline test acc.", "-", "0.9739", x.analysis("baseline_test_accuracy"), ACC))),
    Entry(9, "cifar10_dint90_cpu", "threshold_dimension", "cifar10_dint90_cpu", minutes=40, quantities=(
        Q("CIFAR-10 d_int90 (grid)", "~9000", "12365", x.d_int("grid"), DINT),
        Q("CIFAR-10 d_int90 (interpolated)", "~9000", "10891", x.d_int("interpolated"), DINT),
        Q("CIFAR-10 baseline test acc.", "-", "0.5105", x.analysis("baseline_test_accuracy"), ACC1))),
    # ---------------------------------------------------------------- claim 10
    Entry(10, "mnist_density_cpu", "radius_scan", "mnist_density_cpu", minutes=15, quantities=(
        Q("full-space Tr/||H||_F at r_X", "-", "6.43", x.density("trace_over_frob", radius=0), SLQ),
        Q("lambda_1 at r_X", "-", "30.8", x.density("top", radius=0), SLQ),
        Q("lambda_1 / bulk edge at r_X", "-", "7.42", x.density("top_over_edge", radius=0), SLQ),
        Q("lambda_1 / bulk edge at x = -2", "-", "1.46", x.density("top_over_edge", radius=-2), SLQ),
        Q("share of Tr(H) above the edge at r_X", "-", "0.33", x.density("top_trace_share", radius=0), SLQ),
        Q("share of Tr(H) above the edge at x = +1", "-", "0.48", x.density("top_trace_share", radius=1),
          SLQ),
        Q("positive share beyond +-eps at r_X", "-", "0.53", x.density("pos_share_eps", radius=0), SLQ),
    ) + _scan(3, (10, "-", "0.967", "-", "2.72"))),
    # ---------------------------------------------------------------- claim 11
    Entry(11, "mnist_gordon_cpu", "threshold_dimension", "mnist_gordon_cpu", minutes=15, quantities=tuple(
        Q(f"{what} d*, target {target:g}, {start}", "-", value, x.gordon(field, target=target, start=start),
          tol)
        for field, what, tol, cells in (
            ("measured_threshold", "measured", GRID_D, ("297", "522", "918", "96", "393", "692")),
            ("larsen", "eq. (4)", LARSEN, ("704", "927", "1139", "625", "829", "1025")))
        for (start, target), value in zip([(s, t) for s in ("t0", "t8") for t in (0.8, 0.5, 0.35)], cells))
        + (Q("d_int90 (grid)", "-", "692", x.d_int("grid"), GRID_D),)),
    # ---------------------------------------------------------------- claim 12
    Entry(12, "mnist_init_selection_powered_cpu", "init_selection", "mnist_init_selection_powered_cpu",
          minutes=25, quantities=(
        Q("final test loss, top - bottom", "lower", "-0.0040",
          x.analysis("effects.final_test_loss.difference"), EFFECT),
        Q("final test loss: Welch p", "significant", "0.0003", x.analysis("effects.final_test_loss.p_value"),
          P_WELCH),
        Q("final test accuracy, top - bottom", "higher", "+0.0009",
          x.analysis("effects.final_test_accuracy.difference"), Tol(0.0005, 0, "as the test loss's effect")),
        Q("mean training loss, top - bottom", "faster", "-0.029",
          x.analysis("effects.mean_train_loss.difference"), Tol(0.003, 0, "as the test loss's effect")),
        Q("Spearman rho of score and initial loss", "-", "-0.69", x.analysis("score_correlations.loss.rho"),
          Tol(0.02, 0, "rank correlation of 256 float32 scores")))),
)
