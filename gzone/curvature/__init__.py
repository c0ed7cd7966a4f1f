"""Curvature at a point: HVPs, exact subspace Hessians, the Gauss-Newton split, Lanczos, SLQ, traces.

  products.py      Hessian-vector products (forward-over-reverse): the one home of the HVP
  hessian.py       the exact subspace Hessian P^T H P, P^T A P for any product, spectrum metrics
  gauss_newton.py  H = G + R: Gauss-Newton and residual products
  spectra.py       matrix-free full-space spectra: Lanczos, extreme eigenpairs, SLQ, trace estimators
  fullspace.py     at a scan point: full-space Tr/||.||_F with standard errors, Lanczos extremes,
                   the Gauss-Newton / residual split of P^T H P

The names most callers need are re-exported here (``curvature.subspace_hessian`` etc.).
"""

from gzone.curvature.hessian import (
    METHODS,
    default_chunk_size,
    spectrum_metrics,
    subspace_hessian,
    subspace_matrix,
)
from gzone.curvature.products import hvp, linearized_hvp, loss_hvp

__all__ = [
    "METHODS",
    "default_chunk_size",
    "hvp",
    "linearized_hvp",
    "loss_hvp",
    "spectrum_metrics",
    "subspace_hessian",
    "subspace_matrix",
]
