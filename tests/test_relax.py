"""RELAX (SBNRelax) and the per-layer REBAR it generalises.

Unbiasedness uses tests/enumeration.py's exact-enumeration check `z_scores`
(fixed seeds; the mean of N_DRAWS estimates within UNBIASED_BELOW standard
errors of the exact gradient on every element; the reasoning is in that
module's docstring), as tests/test_estimators.py does; the variance gradient
is compared with an independent nested-autodiff computation.
"""

import numpy as np
import pytest
import tensorflow as tf

from rebar.estimators import sbn as estimators
from rebar.sbn import Pass, conditional_noise, logistic_sample, relaxed_sampler
from tests import enumeration
from tests.enumeration import (BIASED_ABOVE, UNBIASED_BELOW, per_variable,
                               z_scores)


@pytest.mark.parametrize('n_layer', [1, 2])
@pytest.mark.parametrize('depth', [2, 4])
@pytest.mark.parametrize('cv', ['rebar', 'relax', 'free'])
def test_relax_is_unbiased(cv, depth, n_layer):
  """Every control variate and r_ρ depth: within UNBIASED_BELOW standard
  errors of the exact gradient on every element (fixed seeds)."""
  z, slices = z_scores('model=SBNRelax,relax_cv=%s,relax_depth=%d,n_layer=%d'
                       % (cv, depth, n_layer))
  assert np.abs(z).max() < UNBIASED_BELOW, per_variable(z, slices)


@pytest.mark.parametrize('text', [
    'model=SBNRebarPerLayer,n_layer=2,nonlinear=true',
    'model=SBNRelax,task=sp,n_layer=2,n_samples=2',
    'model=SBNRelax,n_layer=2,muprop_relaxation=false'])
def test_relax_variants_are_unbiased(text):
  """Within UNBIASED_BELOW standard errors on every element (fixed
  seeds)."""
  z, slices = z_scores(text)
  assert np.abs(z).max() < UNBIASED_BELOW, per_variable(z, slices)


def test_relax_inside_track_grad_variances_is_unbiased():
  """The tracker's RELAX estimate passes the same check (fixed
  seeds, UNBIASED_BELOW standard errors)."""
  z, slices = z_scores('model=SBNTrackGradVariances,track_relax=true,n_layer=2',
                       estimate_name='RELAX')
  assert np.abs(z).max() < UNBIASED_BELOW, per_variable(z, slices)


def test_check_has_power_relax_without_reparameterised_term(monkeypatch):
  """Dropping η (∂c(z)/∂ℓ - ∂c(z~)/∂ℓ) leaves a biased estimator, which the
  check finds at more than BIASED_ABOVE standard errors (fixed seeds)."""
  original = estimators.relax_layer_estimate

  def broken(elbo, activation, logits, c_z_tilde, reparam, eta):
    return original(elbo, activation, logits, c_z_tilde, 0.0 * reparam, eta)

  monkeypatch.setattr(estimators, 'relax_layer_estimate', broken)
  z, slices = z_scores('model=SBNRelax,n_layer=1')
  assert np.abs(z).max() > BIASED_ABOVE, per_variable(z, slices)


def nested_autodiff_variance_gradient(model, x, noise):
  """∂/∂(λ, η, ρ) of Σ_l mean(ĝ_l²) + wd ||ρ||², written out independently:
  the logits of layer l are a watched copy, and ∂c/∂ℓ_l is an inner
  gradient taken under the outer tape."""
  est = model.estimators[0]
  net = model.network
  relax = net.hparams.muprop_relaxation
  with tf.GradientTape() as outer:
    outer.watch(est.aux_variables)
    hard = net.hard_pass(x, noise)
    variance = 0.0
    for l in range(net.n_layer):
      with tf.GradientTape() as inner:
        logits = tf.identity(hard.logits[l])
        inner.watch(logits)
        start = Pass(hard.logits[:l] + [logits], hard.activations,
                     hard.log_q, hard.model_term, hard.elbo)
        v = conditional_noise(logits, noise[l])
        temperature = tf.exp(est.log_temperatures[l])

        def c(noise_l):
          layer_noise = noise[:l] + [noise_l] + noise[l + 1:]
          value = 0.0
          if est.cv != 'free':
            value += net.run_pass(x, relaxed_sampler(layer_noise, temperature,
                                                     relax),
                                  start=start, start_layer=l).elbo
          if est.cv != 'rebar':
            value += est.r_nets[l](x, logistic_sample(logits, noise_l),
                                   hard.activations[:l])
          return value

        c_z, c_z_tilde = c(noise[l]), c(v)
        difference = tf.reduce_sum(c_z - c_z_tilde)
      reparam = inner.gradient(difference, logits)
      score = hard.activations[l] - tf.sigmoid(logits)
      g = ((hard.elbo - est.etas[l] * c_z_tilde)[:, None] * score
           + est.etas[l] * reparam)
      variance += tf.reduce_mean(tf.square(g))
    variance += est.weight_decay * tf.add_n(
        [tf.reduce_sum(tf.square(w)) for w in est.rho] + [0.0])
  return outer.gradient(variance, est.aux_variables,
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)


@pytest.mark.parametrize('text', [
    'relax_cv=relax,n_layer=2', 'relax_cv=free,n_layer=1,relax_depth=4',
    'relax_cv=rebar,n_layer=2,nonlinear=true'])
def test_variance_gradient_matches_nested_autodiff(text):
  model = enumeration.tiny_model('model=SBNRelax,relax_weight_decay=0.01,'
                                 + text, seed=5)
  x = tf.constant(np.tile(enumeration.tiny_batch(model), (4, 1)))
  noise = model.network.sample_noise(model.noise_generator, 12)
  applied = model.estimate(x, noise)[1]
  expected = nested_autodiff_variance_gradient(model, x, noise)
  assert len(applied) == len(expected) == len(model.aux_variables)
  for var, a, e in zip(model.aux_variables, applied, expected):
    np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=2e-3, atol=1e-5,
                               err_msg=var.name)
  assert max(float(tf.reduce_max(tf.abs(e))) for e in expected) > 1e-3


def test_track_grad_variances_with_relax_reports_six_estimators():
  model = enumeration.tiny_model(
      'model=SBNTrackGradVariances,track_relax=true,n_layer=1')
  assert model.variance_names == ('DynamicREBAR', 'MuProp', 'NVIL', 'REBAR',
                                  'RELAX', 'SimpleMuProp')
  x = tf.constant(enumeration.tiny_batch(model))
  metrics = model.train_step(x)
  accumulated, variances = model.take_accumulated()
  # A deviation per estimator (accumulated by the tracker), besides the
  # ELBO, the temperature and its gradient's two moments and the log mean
  # squared mean gradient (train_step's).
  assert set(accumulated) == {'deviation_' + n for n in model.variance_names}
  assert set(model.printed_names) <= set(metrics) | set(accumulated)
  assert len(model.printed_names) == 4 + 6 + 1
  assert set(variances) == set(model.variance_names)
