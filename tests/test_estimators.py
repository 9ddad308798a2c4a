"""Every estimator of reference section 6, checked by exact enumeration.

The check is tests/enumeration.py's `z_scores` (its module docstring gives
the reasoning): on a tiny SBN (n_input=6, n_hidden=3) with random non-zero
model variables, baselines, etas and temperatures, the mean of N_DRAWS (500)
independent estimates must lie within UNBIASED_BELOW (4) standard errors of
the exact gradient on every element (a correct estimator fails a case by
chance with probability at most about 1.2%); all seeds are fixed, so the
outcome is reproducible. Known biases are shown as |z| > BIASED_ABOVE (10)
on the variables that carry them.
"""

import ast
import json

import numpy as np
import pytest
import tensorflow as tf

from rebar import data
from rebar.estimators import sbn as estimators
from rebar import estimator_modules
from rebar import models
from rebar import runlog
from rebar import train as training
from rebar.hparams import parse_hparams
from rebar.sbn import conditional_noise, relaxed_sampler
from tests import enumeration
# Also re-exported from here for test modules written against this one.
from tests.enumeration import (BIASED_ABOVE, N_DRAWS, UNBIASED_BELOW,
                               per_variable, z_scores)


UNBIASED = [
    'model=SBNNVIL,n_layer=1',
    'model=SBNNVIL,n_layer=2,nonlinear=true',
    'model=SBNNVIL,task=sp,n_layer=2',
    'model=SBNSimpleMuProp,n_layer=2',
    'model=SBNSimpleMuProp,task=sp,n_layer=1,n_samples=2',
    'model=SBNMuProp,n_layer=1',
    'model=SBNMuProp,n_layer=2',
    'model=SBNMuProp,n_layer=1,nonlinear=true',
    'model=SBNMuProp,task=sp,n_layer=2,n_samples=2',
    # REBAR: one layer (both forms), the non-quadratic form and the fixed
    # quadratic form with several layers; both relaxations.
    'model=SBNRebar,n_layer=1',
    'model=SBNRebar,n_layer=1,muprop_relaxation=false,nonlinear=true',
    'model=SBNRebar,n_layer=2,quadratic=false',
    'model=SBNRebar,n_layer=2,quadratic=false,muprop_relaxation=false',
    'model=SBNRebar,n_layer=2,quadratic_fix=true',
    'model=SBNRebar,n_layer=3,quadratic_fix=true,muprop_relaxation=false',
    'model=SBNRebar,n_layer=2,quadratic_fix=true,nonlinear=true',
    'model=SBNRebar,task=sp,n_layer=2,quadratic_fix=true,n_samples=2',
    'model=SBNRebar,task=sp,n_layer=1,quadratic=false',
    'model=SBNDynamicRebar,n_layer=1',
    'model=SBNDynamicRebar,n_layer=1,muprop_relaxation=false',
    'model=SBNDynamicRebar,n_layer=2,quadratic=false',
    'model=SBNDynamicRebar,n_layer=2,quadratic_fix=true',
    'model=SBNDynamicRebar,n_layer=2,quadratic_fix=true,nonlinear=true,'
    'muprop_relaxation=false',
    'model=SBNDynamicRebar,task=sp,n_layer=2,quadratic=false,n_samples=2',
]


@pytest.mark.parametrize('text', UNBIASED)
def test_estimator_is_unbiased(text):
  """Mean of N_DRAWS estimates within UNBIASED_BELOW standard errors of the
  exact gradient on every element (fixed seeds; module docstring)."""
  z, slices = z_scores(text)
  assert np.abs(z).max() < UNBIASED_BELOW, per_variable(z, slices)


@pytest.mark.parametrize('name', models.SBNTrackGradVariances.ESTIMATOR_NAMES)
@pytest.mark.parametrize('config', [
    'n_layer=1', 'n_layer=2,quadratic_fix=true,task=sp'])
def test_each_tracked_estimator_is_unbiased(name, config):
  """Each estimator SBNTrackGradVariances compares passes the same check as
  test_estimator_is_unbiased (fixed seeds, UNBIASED_BELOW standard
  errors)."""
  z, slices = z_scores('model=SBNTrackGradVariances,' + config, name)
  assert np.abs(z).max() < UNBIASED_BELOW, (name, per_variable(z, slices))


@pytest.mark.parametrize('config', [
    'n_layer=1', 'n_layer=2,nonlinear=true', 'n_layer=2,quadratic=false',
    'n_layer=2,task=sp', 'n_layer=2,track_relax=true',
    'n_layer=2,track_extra=arm+disarm+relax'])
@pytest.mark.parametrize('jit', [False, True])
def test_track_estimators_share_generative_gradients(config, jit):
  """The tracker keeps one EMA for the generative variables because every
  tracked estimator's gradient there is the same, bit for bit; recognition
  gradients differ."""
  model = enumeration.tiny_model('model=SBNTrackGradVariances,' + config,
                                 n_input=8)
  x = tf.constant(enumeration.tiny_batch(model, n_rows=6))

  def estimate_all(x):
    return [e.model_grads for e in
            model.estimate_all(*model.sample_step_inputs(x)).values()]

  if jit:
    estimate_all = tf.function(estimate_all, jit_compile=True)
  grads = [[g.numpy() for g in per] for per in estimate_all(x)]
  generative = {v.ref() for v in model.network.p_variables}
  is_p = [v.ref() in generative for v in model.model_variables]
  assert any(is_p) and not all(is_p)
  for other in grads[1:]:
    for first, g, p in zip(grads[0], other, is_p):
      if p:
        np.testing.assert_array_equal(g, first)
  assert any(not np.array_equal(g, first) for other in grads[1:]
             for first, g, p in zip(grads[0], other, is_p) if not p)


def test_gumbel_is_biased():
  """The Concrete (Gumbel) estimator is biased: some element more than
  BIASED_ABOVE standard errors from the exact gradient (fixed seeds)."""
  z, slices = z_scores('model=SBNGumbel,temperature=0.5')
  assert np.abs(z).max() > BIASED_ABOVE, per_variable(z, slices)


@pytest.mark.parametrize('model', ['SBNRebar', 'SBNDynamicRebar'])
def test_original_quadratic_rebar_is_biased_on_second_recognition_layer(
    model):
  """The original's default multi-layer control variate (quadratic=true) is
  biased on q_1's variables only; everything else stays unbiased (below
  UNBIASED_BELOW standard errors; fixed seeds). Four times the draws, to
  show the bias at more than BIASED_ABOVE standard errors."""
  z, slices = z_scores('model=%s,n_layer=2' % model, n_draws=4 * N_DRAWS)
  by_var = per_variable(z, slices)
  for name, value in by_var.items():
    if name.startswith('q_1/'):
      assert value > BIASED_ABOVE, by_var
    else:
      assert value < UNBIASED_BELOW, by_var


def test_check_has_power_rebar_without_relaxed_conditional_term(monkeypatch):
  """REBAR without the +f~_v correction term must fail the same check, by
  more than BIASED_ABOVE standard errors (fixed seeds)."""
  def broken(terms):
    return tf.add_n([tf.reduce_mean(tf.stop_gradient(f_v) * log_q - f)
                     for log_q, f, f_v in terms])

  monkeypatch.setattr(estimators, 'rebar_control_variate', broken)
  z, slices = z_scores('model=SBNRebar,n_layer=1')
  assert np.abs(z).max() > BIASED_ABOVE, per_variable(z, slices)


def nested_autodiff_variance_gradient(model, x, noise):
  """∂V/∂(auxiliary variables) by nested autodiff, V = mean over parameters
  of g², aligned with the estimator's aux_variables.

  The score term's f~_v is stopped with respect to the model parameters only
  (it is computed while the inner tape is paused), so the outer tape still
  sees its dependence on the temperature.
  """
  est = model.estimators[0]
  net = model.network
  hparams = net.hparams
  variables = net.variables_in_order
  relax = hparams.muprop_relaxation
  zero = tf.UnconnectedGradients.ZERO
  with tf.GradientTape() as outer:
    outer.watch(est.aux_variables)
    with tf.GradientTape(persistent=True) as inner:
      hard = net.hard_pass(x, noise)
      reinforce = -tf.reduce_mean(
          (tf.stop_gradient(hard.elbo) - est.baseline(x))
          * tf.add_n(hard.log_q) + hard.model_term)
      temperature = est.temperature()
      v = [conditional_noise(l, u) for l, u in zip(hard.logits, noise)]
      if hparams.quadratic:
        starts = range(net.n_layer)
      else:
        starts = [None]
      h = 0.0
      for k in starts:
        if k is None:
          log_q, start, noise_v = tf.add_n(hard.log_q), 0, v
        else:
          log_q, start = hard.log_q[k], k
          noise_v = noise[:k] + [v[k]] + noise[k + 1:]
        kwargs = dict(start=hard, start_layer=start)
        relaxed = net.run_pass(x, relaxed_sampler(noise, temperature, relax),
                               **kwargs)
        relaxed_v = net.run_pass(
            x, relaxed_sampler(noise_v, temperature, relax), **kwargs)
        with inner.stop_recording():
          f_v_for_score = net.run_pass(
              x, relaxed_sampler(noise_v, temperature, relax), **kwargs).elbo
        h += tf.reduce_mean(f_v_for_score * log_q - relaxed.elbo
                            + relaxed_v.elbo)
    etas = [estimator_modules.eta_scale(w) for w in est.eta_w]
    grads = [g_f + eta * g_h for g_f, g_h, eta in zip(
        inner.gradient(reinforce, variables, unconnected_gradients=zero),
        inner.gradient(h, variables, unconnected_gradients=zero), etas)]
    variance = tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]) / float(
        sum(int(tf.size(v)) for v in variables))
  return outer.gradient(variance, est.aux_variables,
                        unconnected_gradients=zero)


def nested_autodiff_temperature_gradient(model, x, noise):
  """∂V/∂t by nested autodiff (see nested_autodiff_variance_gradient)."""
  return nested_autodiff_variance_gradient(model, x, noise)[-1]


@pytest.mark.parametrize('text', [
    'n_layer=1', 'n_layer=2,quadratic=false',
    'n_layer=2,quadratic_fix=true,nonlinear=true',
    'n_layer=1,muprop_relaxation=false'])
def test_dynamic_rebar_temperature_gradient_matches_nested_autodiff(text):
  model = enumeration.tiny_model('model=SBNDynamicRebar,' + text, seed=5)
  x = tf.constant(np.tile(enumeration.tiny_batch(model), (4, 1)))
  noise = model.network.sample_noise(model.noise_generator, 12)
  hand_built = model.estimate(x, noise)[1][-1].numpy()
  nested = nested_autodiff_temperature_gradient(model, x, noise).numpy()
  assert abs(nested) > 1e-4
  np.testing.assert_allclose(hand_built, nested, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize('text', [
    'model=SBNRebar,n_layer=1', 'model=SBNRebar,n_layer=2,quadratic_fix=true',
    'model=SBNDynamicRebar,n_layer=2,quadratic=false'])
def test_rebar_baseline_and_eta_gradients_match_nested_autodiff(text):
  """The estimator forms ∂V/∂η by hand (2/N Σ g ⊙ (g_s + g_r)) and gets the
  baseline's by autodiff; both must equal differentiating V directly."""
  model = enumeration.tiny_model(text, seed=5)
  est = model.estimators[0]
  x = tf.constant(np.tile(enumeration.tiny_batch(model), (4, 1)))
  noise = model.network.sample_noise(model.noise_generator, 12)
  applied = model.estimate(x, noise)[1]
  expected = nested_autodiff_variance_gradient(model, x, noise)
  n = len(est.baseline.variables_in_order) + len(est.eta_w)
  for var, a, e in list(zip(est.aux_variables, applied, expected))[:n]:
    np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=2e-3, atol=1e-6,
                               err_msg=var.name)
  recognition_etas = [e for v, e in zip(model.model_variables,
                                        expected[-len(est.eta_w):]
                                        if not est.dynamic else
                                        expected[-len(est.eta_w) - 1:-1])
                      if v.name.startswith('q_')]
  assert max(abs(float(e)) for e in recognition_etas) > 1e-4


@pytest.fixture(scope='module')
def mnist(mirror_data_dir):
  return data.load_data(parse_hparams(''), mirror_data_dir)


@pytest.mark.parametrize('model_name', ['SBNRebar', 'SBNDynamicRebar'])
def test_generative_etas_stay_one_recognition_etas_move(mnist, model_name):
  train = mnist[0]
  hparams = parse_hparams('model=%s,n_layer=2' % model_name)
  model = models.build_model(hparams, train.mean(axis=0), 0)
  trainer = training.Trainer(model, train)
  order = training.epoch_permutation(0, 0, train.shape[0])[:100 * 24]
  trainer.run_block(order.reshape(100, 24))
  etas = {v.name.split(':')[0]: float(estimator_modules.eta_scale(w).numpy())
          for v, w in zip(model.model_variables, model.estimators[0].eta_w)}
  for name, eta in etas.items():
    if name.startswith('q_'):
      assert abs(eta - 1.0) > 1e-3, etas
    else:
      assert eta == 1.0, etas


@pytest.mark.parametrize('model_name', sorted(models.MODEL_CLASSES))
def test_every_model_trains_100_steps_on_mnist(mnist, model_name, tmp_path):
  train, valid, test = mnist
  # SBNReinforceLOO leaves one of each example's samples out: it needs two.
  # The categorical models' own batch (200) would make this their slowest
  # test; 24 rows show the same.
  extra = {'SBNReinforceLOO': ',n_samples=2', 'CategoricalVAE': ',batch_size=24',
           'CategoricalTrackGradVariances': ',batch_size=24'}
  hparams = parse_hparams('model=%s,n_layer=2,learning_rate=0.0003%s' % (
      model_name, extra.get(model_name, '')))
  model = models.build_model(hparams, train.mean(axis=0), 0)
  trainer = training.Trainer(model, train)
  lines = []
  training.train(model, trainer, valid, test, str(tmp_path), seed=0,
                 max_steps=100, eval_freq=0, out=lines.append)
  assert lines[0].startswith('Step 100: [')
  values = np.array(lines[0].split('[', 1)[1].rstrip(']').split(), float)
  assert len(values) == len(model.printed_names)
  # The run's record of the same epoch line.
  (record,) = [json.loads(l) for l in open(tmp_path / runlog.METRICS_FILE)]
  assert (record['kind'], record['step']) == ('train', 100)
  assert list(record['values']) == list(model.printed_names)
  # One temperature outside `values`, named for what it is: the model's
  # temperature after the last step.
  assert [k for k in record if 'temperature' in k] == ['temperature_at_end']
  assert record['temperature_at_end'] == pytest.approx(
      float(model.temperature().numpy()))
  if model.variances_by_name:
    if model_name == 'SBNTrackGradVariances':
      # The first step's mean squared gradient is 0 (EMAs start at zero), so
      # the epoch mean of its log is -inf, as the original printed.
      assert np.all(np.isfinite(values[:-1])) and values[-1] == -np.inf
    else:
      assert np.all(np.isfinite(values)), lines[0]
    # One `('Name', log variance)` line per estimator, sorted by name; a
    # literal, so literal_eval reads it (a non-finite value would not be).
    printed = [ast.literal_eval(l) for l in lines[1:]]
    assert [name for name, _ in printed] == sorted(model.variance_names)
    assert all(np.isfinite(v) for _, v in printed)
    assert record['log_variance'] == dict(printed)
  else:
    assert np.all(np.isfinite(values)), lines[0]
    assert np.isfinite(float(lines[1]))
    assert record['log_variance'] == float(lines[1])
