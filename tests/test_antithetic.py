"""ARM, DisARM and REINFORCE with a per-example leave-one-out baseline on
the SBN (SBNARM, SBNDisARM, SBNReinforceLOO): unbiased by exact
enumeration (tests/enumeration.py: the mean of N_DRAWS estimates within
UNBIASED_BELOW standard errors of the exact gradient on every element, fixed
seeds), one and two layers, linear and nonlinear, tasks sbn and sp, several
n_samples; and a DisARM without its σ(|ℓ|) factor caught by the same check
(beyond BIASED_ABOVE standard errors)."""

import numpy as np
import pytest
import tensorflow as tf

from rebar import estimator_modules
from rebar.estimators import bernoulli
from rebar import models
from rebar.hparams import HParamsError, parse_hparams
from tests.enumeration import (BIASED_ABOVE, UNBIASED_BELOW, per_variable,
                               z_scores)

UNBIASED = [
    'model=SBNARM,n_layer=1',
    'model=SBNARM,n_layer=2,nonlinear=true',
    'model=SBNARM,task=sp,n_layer=2,n_samples=2',
    'model=SBNDisARM,n_layer=1',
    'model=SBNDisARM,n_layer=2',
    'model=SBNDisARM,n_layer=1,nonlinear=true,n_samples=3',
    'model=SBNDisARM,task=sp,n_layer=2,n_samples=2',
    'model=SBNReinforceLOO,n_samples=2',
    'model=SBNReinforceLOO,n_layer=2,nonlinear=true,n_samples=3',
    'model=SBNReinforceLOO,task=sp,n_layer=2,n_samples=2',
]


@pytest.mark.parametrize('text', UNBIASED)
def test_estimator_is_unbiased(text):
  z, slices = z_scores(text)
  assert np.abs(z).max() < UNBIASED_BELOW, per_variable(z, slices)


def test_disarm_without_its_sigma_factor_is_caught(monkeypatch):
  """σ(|ℓ|) dropped (the estimate scaled by 1/σ(|ℓ|) per unit): biased on
  the recognition variables."""
  original = bernoulli.disarm_estimate

  def broken(logits, b, b_anti, f_values, f_anti):
    return original(logits, b, b_anti, f_values, f_anti) / tf.sigmoid(
        tf.abs(logits))

  monkeypatch.setattr(bernoulli, 'disarm_estimate', broken)
  z, slices = z_scores('model=SBNDisARM,n_layer=1')
  assert np.abs(z).max() > BIASED_ABOVE, per_variable(z, slices)


@pytest.mark.parametrize('text', ['model=SBNARM,n_layer=2',
                                  'model=SBNDisARM,n_layer=3'])
def test_independent_noise_above_the_layer_is_unbiased_too(text, monkeypatch):
  """The alternative the default was measured against
  (bench/antithetic_noise.py): the partner pass draws fresh noise above
  layer l."""
  original = estimator_modules.AntitheticEstimator.__init__

  def independent(self, network, generator, kind, name=None):
    original(self, network, generator, kind, name,
             above_noise=tf.random.Generator.from_seed(11))

  monkeypatch.setattr(estimator_modules.AntitheticEstimator, '__init__',
                      independent)
  z, slices = z_scores(text)
  assert np.abs(z).max() < UNBIASED_BELOW, per_variable(z, slices)


def test_reinforce_loo_needs_two_samples_per_example():
  with pytest.raises(HParamsError, match='n_samples to 2 or more'):
    parse_hparams('model=SBNReinforceLOO')


@pytest.mark.parametrize('name', ['ARM', 'DisARM'])
def test_arm_and_disarm_inside_track_grad_variances_are_unbiased(name):
  z, slices = z_scores('model=SBNTrackGradVariances,n_layer=2,'
                       'track_extra=disarm+arm', name)
  assert np.abs(z).max() < UNBIASED_BELOW, (name, per_variable(z, slices))


def test_track_extra_names_and_order():
  """Extras come after the five in TRACK_EXTRAS order whatever the order
  given; track_relax is track_extra's relax; bad values are refused."""
  hparams = parse_hparams('model=SBNTrackGradVariances,track_extra=relax+arm,'
                          'track_relax=true')
  assert hparams.tracked_extras() == ('arm', 'relax')
  model = models.build_model(hparams, np.full(784, 0.5, np.float32), 0)
  assert model.ESTIMATOR_NAMES[5:] == ('ARM', 'RELAX')
  assert 'deviation_ARM' in model.printed_names
  for bad in ('arm+arm', 'rebar', 'arm+', '+arm'):
    with pytest.raises(HParamsError, match='track_extra'):
      parse_hparams('track_extra=' + bad)
