"""Gradient estimators as surrogate losses.

  sbn        the original's layered estimators of reference section 6, on the
             passes of an SBN (rebar.sbn): NVIL, MuProp, REBAR, RELAX per
             layer.
  bernoulli  estimators of ∇ E_{b ~ Bernoulli(σ(ℓ))}[f(b)] for any function
             f of a batch of independent binary vectors (the toy problem and
             new tasks call these).

Each estimator is a small function returning a surrogate loss (and the
auxiliary losses it needs): autodiff of the surrogate gives the estimate.
"""
