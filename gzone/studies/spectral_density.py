"""The full-space spectral density option of the radius scan and of emergent geometry.

At every point, ``density_probes`` Rademacher probes v each run ``density_order`` Lanczos steps on
the full loss Hessian H from v (`spectra.slq`, inside `fullspace.estimates`, the one point
measurement's ``full`` option). Each run's Gauss quadrature, nodes theta_i and weights w_i [probe,
node], is recorded as it is, so any smoothing or statistic can be redone from the records
(`analysis.spectral_density`, the figures): sum_i w_i theta_i^k = v^T H^k v / D exactly for
k <= 2 order - 1, an unbiased estimate of tr(H^k) / D. The probes come from the point's full-space
key (`fullspace.DENSITY_STREAM`): the same at every radius, d and temperature of a seed.

Cost per point and seed: probes x order Hessian-vector products and 4 order^2 D flops of
reorthogonalisation; memory one [order, D] Krylov basis per seed (probes run one after another).
"""

from __future__ import annotations

import dataclasses

from gzone import options
from gzone.options import OptionError, option

DEFAULT_ORDER = 80


@dataclasses.dataclass(frozen=True, kw_only=True)
class DensityOptions(options.Group):
    """The density option group (the same flags in every experiment that has it)."""

    density_probes: int = option(
        0,
        "Rademacher probes of the full loss Hessian's spectral density at each point by stochastic "
        "Lanczos quadrature: each probe's nodes and weights are recorded (0: off).",
        minimum=0,
        setting="changed",
    )
    density_order: int = option(
        0,
        f"Lanczos steps per density probe: the quadrature is exact for moments up to 2 order - 1; "
        f"memory order x D per seed (0: min({DEFAULT_ORDER}, D)).",
        minimum=0,
        setting="changed",
    )

    def _check(self):
        if self.density_order and not self.density_probes:
            raise OptionError("density_order", "only used with --density_probes > 0")

    def density_fields(self, D: int) -> dict:
        """The `fullspace.Spec` density fields for a model of D parameters ({} when off).

        Raises:
          OptionError: the order exceeds D.
        """
        if not self.density_probes:
            return {}
        order = self.density_order or min(DEFAULT_ORDER, D)
        if order > D:
            raise OptionError("density_order", f"{order} exceeds the number of parameters D={D} of the model")
        return {"density_probes": self.density_probes, "density_order": order}
