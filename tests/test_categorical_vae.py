"""CategoricalVAE: its hparams and defaults, its estimators' gradients by
exact enumeration, and a run of rebar_train on the threshold-binarized
MNIST of the mirror.

The enumeration check is tests/enumeration.py's applied to this model: on a
tiny VAE (6 pixels, K = 2 variables of C = 3 classes, hidden layers of 8 in
place of 512 and 256) the ELBO's exact gradient sums the 9 configurations
of b; each estimator is drawn N_DRAWS = 500 times (each draw one batch of
COPIES = 32 copies of 3 rows), and every element of every gradient must lie
within UNBIASED_BELOW = 4 standard errors of the exact one (z close to
N(0, 1) by the CLT over the draws; all seeds fixed). The biased
Gumbel-softmax must miss by more than BIASED_ABOVE = 10 somewhere.
"""

import itertools
import json

import numpy as np
import pytest
import tensorflow as tf

from rebar import categorical_vae
from rebar import data
from rebar import models
from rebar.hparams import HParamsError, parse_hparams
from tests.conftest import MIRROR_URLS
from tests.enumeration import (BIASED_ABOVE, COPIES, N_DRAWS, UNBIASED_BELOW,
                               flatten)
from tests.runs import run_dir_of
from tests.test_train import run_script

TINY = dict(n_input=6, n_latent=2, n_categories=3)


def test_defaults_are_the_arsm_papers_and_given_values_win():
  h = parse_hparams('model=CategoricalVAE')
  assert (h.estimator, h.batch_size, h.learning_rate, h.binarization,
          h.n_latent, h.n_categories) == ('arsm', 200, 0.0003, 'threshold',
                                          20, 10)
  h = parse_hparams('model=CategoricalVAE,batch_size=50,estimator=rebar')
  assert (h.batch_size, h.estimator) == (50, 'rebar')
  # SBN models keep theirs.
  assert parse_hparams('model=SBN').batch_size == 24


@pytest.mark.parametrize('text, fragment', [
    ('model=CategoricalVAE,estimator=nvil', 'unknown estimator'),
    ('model=SBNRebar,estimator=arsm', 'leave estimator out'),
    ('model=CategoricalVAE,n_categories=1', 'n_categories >= 2'),
    ('model=CategoricalVAE,estimator=reinforce_loo', 'n_samples to 2'),
    ('model=CategoricalVAE,binarization=,task=omni', 'task must be sbn'),
    ('model=SBN,binarization=threshold,task=omni', 'needs task=sbn'),
])
def test_bad_hparams_are_one_line(text, fragment):
  with pytest.raises(HParamsError, match=fragment):
    parse_hparams(text)


def tiny_vae(text, monkeypatch, seed=0, model='CategoricalVAE'):
  monkeypatch.setattr(categorical_vae, 'HIDDEN', (8, 8))
  hparams = parse_hparams('model=%s,%s' % (model, text), **TINY)
  rng = np.random.RandomState(seed)
  model = models.build_model(hparams, np.full(6, 0.5, np.float32), seed)
  for var in model.model_variables:
    var.assign(rng.normal(0.0, 0.7, var.shape).astype(np.float32))
  return model


def exact_gradient(model, x):
  """∂(-mean_x Σ_b q(b | x) f(b))/∂θ, the 9 configurations summed."""
  configs = np.array([np.eye(3)[list(c)] for c in
                      itertools.product(range(3), repeat=2)], np.float32)
  rows = np.repeat(x, len(configs), axis=0)
  b = np.tile(configs, (x.shape[0], 1, 1))
  with tf.GradientTape() as tape:
    logits = model.network.logits(tf.constant(rows))
    log_q = tf.reduce_sum(b * tf.nn.log_softmax(logits), axis=[-2, -1])
    f = model.network.elbo(tf.constant(rows), tf.constant(b), logits)
    loss = -tf.reduce_sum(tf.exp(log_q) * f) / x.shape[0]
  return flatten(tape.gradient(loss, model.model_variables),
                 model.model_variables).numpy().astype(np.float64)


def z_scores(model, x, name=None):
  """z per gradient element of the model's estimator, or of the tracked
  estimator `name` (CategoricalTrackGradVariances: on the step's shared
  noise, as its train_step runs it)."""
  batch = tf.constant(np.tile(x, (COPIES, 1)))

  def estimate():
    if name is None:
      return model.estimate(batch)
    tape = tf.GradientTape(persistent=True)
    noise = model.step_noise(batch)
    with tape:
      result = model.run_estimator(name, batch, model.network.logits(batch),
                                   noise, model.samples_of(name))
    return result, tape

  @tf.function
  def draws():
    out = tf.TensorArray(tf.float32, size=N_DRAWS)
    for k in tf.range(N_DRAWS):
      result, tape = estimate()
      with tape:
        loss = -result.surrogate
      out = out.write(k, flatten(tape.gradient(loss, model.model_variables),
                                 model.model_variables))
    return out.stack()

  samples = draws().numpy().astype(np.float64)
  exact = exact_gradient(model, x)
  assert np.abs(exact).max() > 1e-3
  error = samples.std(axis=0, ddof=1) / np.sqrt(N_DRAWS)
  scale = np.maximum(error, 1e-5 * (1.0 + np.abs(exact)))
  return (samples.mean(axis=0) - exact) / scale


X = (np.random.RandomState(1).rand(3, 6) < 0.5).astype(np.float32)


@pytest.mark.parametrize('text', [
    'estimator=reinforce_loo,n_samples=2', 'estimator=rebar',
    'estimator=relax', 'estimator=relax,relax_cv=free', 'estimator=ars',
    'estimator=arsm', 'estimator=stick_breaking_disarm'])
def test_estimators_give_the_exact_gradient_on_average(text, monkeypatch):
  z = z_scores(tiny_vae(text, monkeypatch), X)
  assert np.abs(z).max() < UNBIASED_BELOW


@pytest.mark.parametrize('name', ['reinforce_loo', 'relax', 'arsm'])
def test_tracked_estimators_are_unbiased_on_the_shared_noise(name,
                                                             monkeypatch):
  model = tiny_vae('estimator=rebar', monkeypatch,
                   model='CategoricalTrackGradVariances')
  assert np.abs(z_scores(model, X, name)).max() < UNBIASED_BELOW


def test_tracker_prints_every_estimators_cost_and_variance(monkeypatch):
  from rebar import train as training  # pylint: disable=g-import-not-at-top
  model = tiny_vae('batch_size=6', monkeypatch,
                   model='CategoricalTrackGradVariances')
  trainer = training.Trainer(model, np.tile(X, (4, 1)))
  assert not model.xla_compatible  # ARS and ARSM
  trainer.run_block(np.arange(12).reshape(2, 6))
  values, log_variances = trainer.epoch_summary()
  printed = dict(zip(model.printed_names, values))
  assert printed['n_evaluations_reinforce_loo'] == 2.0
  assert printed['n_evaluations_relax'] == 3.0
  assert 1.0 <= printed['n_evaluations_arsm'] <= 4.0
  assert model.variance_names == tuple(sorted(model.TRACKED))
  assert np.all(np.isfinite(log_variances))
  # Each REBAR and RELAX estimator has its own η and temperature.
  assert set(model.relaxations) == {'rebar', 'relax'}


def test_gumbel_softmax_is_biased(monkeypatch):
  z = z_scores(tiny_vae('estimator=gumbel_softmax', monkeypatch), X)
  assert np.abs(z).max() > BIASED_ABOVE


def test_decoder_evaluations_count_relax_control_variate(monkeypatch):
  x = tf.constant(X)
  for text, expected in (('estimator=relax', 3.0),
                         ('estimator=relax,relax_cv=free', 1.0),
                         ('estimator=reinforce_loo,n_samples=3', 3.0),
                         ('estimator=rebar', 3.0)):
    model = tiny_vae(text, monkeypatch)
    result, _ = model.estimate(x)
    assert float(model.decoder_evaluations(model.estimator, result)) == (
        expected), text
  model = tiny_vae('estimator=arsm', monkeypatch)
  result, _ = model.estimate(x)
  # The sample and at most one action per pair of the 3 classes.
  assert 1.0 <= float(model.decoder_evaluations('arsm', result)) <= 4.0


def test_rebar_train_runs_a_categorical_vae(mirror_data_dir, tmp_path):
  """ARSM on the threshold-binarized mirror: the epoch line has the three
  values, evaluation and metrics.jsonl as for the SBN models."""
  data.download(['mnist_threshold'], mirror_data_dir, MIRROR_URLS,
                progress=False)
  result = run_script(
      '--hparams=model=CategoricalVAE,estimator=arsm,batch_size=50',
      '--working_dir=%s' % tmp_path, '--max_steps=20', '--eval_freq=0',
      '--final_eval', '--eval_images=200', '--seed=1',
      '--data_dir=%s' % mirror_data_dir, '--download=false')
  lines = result.stdout.splitlines()
  step = [l for l in lines if l.startswith('Step 20:')]
  assert step and len(step[0].split('[')[1].strip(' ]').split()) == 3, lines
  assert any(l.startswith('Valid 20:') for l in lines), lines
  records = [json.loads(l) for l in
             open(run_dir_of(tmp_path) / 'metrics.jsonl')]
  train = [r for r in records if r['kind'] == 'train'][0]
  assert set(train['values']) == {'elbo', 'n_evaluations', 'temperature'}
  assert 1 < train['values']['n_evaluations'] <= 46
  assert np.isfinite(train['log_variance'])
