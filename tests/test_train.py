"""The training loop and script: epochs and printing, real-data training,
resumption, determinism, evaluation and user errors."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from rebar import data
from rebar import models
from rebar import runtime
from rebar import evaluation
from rebar import train as training
from rebar.hparams import parse_hparams
from tests.runs import run_dir_of

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_trainer(text, train, seed=0):
  hparams = parse_hparams(text)
  model = models.build_model(hparams, train.mean(axis=0), seed)
  return model, training.Trainer(model, train)


def test_epochs_and_max_steps_print_the_reference_lines(tmp_path):
  """100 rows in batches of 24: 5 steps an epoch (the last batch has 4 rows);
  an epoch cut short by max_steps prints its line over the steps it ran."""
  rng = np.random.RandomState(0)
  train = (rng.rand(100, 784) < 0.3).astype(np.float32)
  valid = train[:7]
  for max_steps, expected_steps in ((5, [5]), (10, [5, 10]), (7, [5, 7])):
    model, trainer = make_trainer('model=SBN', train)
    lines = []
    training.train(model, trainer, valid, valid, str(tmp_path / str(max_steps)),
                   seed=1, max_steps=max_steps, eval_freq=1,
                   out=lines.append)
    steps = [int(l.split()[1][:-1]) for l in lines if l.startswith('Step ')]
    assert steps == expected_steps
    # Each epoch line is followed by the log variance, a float.
    for i, line in enumerate(lines):
      if line.startswith('Step '):
        float(lines[i + 1])
    # Evaluation after each complete epoch (eval_freq=1), bound first.
    evals = [l for l in lines if l.startswith(('Valid', 'Test'))]
    assert len(evals) == 2 * (max_steps // 5)
    records = [json.loads(l) for l in
               open(tmp_path / str(max_steps) / 'metrics.jsonl')]
    assert [r['step'] for r in records if r['kind'] == 'train'] == steps
    assert int(trainer.step.numpy()) == max_steps


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
  order = training.epoch_permutation(3, 0, 100)
  assert sorted(order) == list(range(100))
  np.testing.assert_array_equal(order, training.epoch_permutation(3, 0, 100))
  assert not np.array_equal(order, training.epoch_permutation(3, 1, 100))
  assert not np.array_equal(order, training.epoch_permutation(4, 0, 100))
  # MNIST's 50,000 rows in batches of 24: 2083 full batches and one of 8
  # (the README's 24 epochs are 50,016 steps); an exact multiple has no
  # short batch.
  assert training.steps_per_epoch(50000, 24) == 2084
  assert training.steps_per_epoch(48, 24) == 2


def test_last_short_batch_uses_every_row_once(tmp_path, monkeypatch):
  """100 rows in batches of 24: each epoch is 4 full batches and a short
  last one of the 4 rows left, and its steps use every row exactly once.

  Rows are counted inside the compiled steps: each row of the training set
  is the binary code of its index, so the model's train_step, wrapped,
  reads back which rows every step gathered, and in which epoch.
  """
  n_train, n_input, n_epochs = 100, 8, 2
  train = ((np.arange(n_train)[:, None] >> np.arange(n_input)) & 1).astype(
      np.float32)
  hparams = parse_hparams('model=SBN,n_hidden=3', n_input=n_input)
  model = models.build_model(hparams, train.mean(axis=0), 0)
  trainer = training.Trainer(model, train)
  batch_size = hparams.batch_size
  spe = training.steps_per_epoch(n_train, batch_size)
  n_full, last = divmod(n_train, batch_size)
  assert last > 0  # the case under test: a short last batch

  counts = tf.Variable(tf.zeros([n_epochs, n_train]))
  code = tf.constant(2.0 ** np.arange(n_input), tf.float32)
  train_step = model.train_step

  def counting_train_step(x):
    rows = tf.cast(tf.linalg.matvec(x, code), tf.int32)
    # The step counter is incremented after this step's train_step.
    epoch = tf.cast(trainer.step // spe, tf.int32)
    counts.scatter_nd_add(
        tf.stack([tf.fill(tf.shape(rows), epoch), rows], axis=1),
        tf.ones(tf.shape(rows)))
    return train_step(x)

  monkeypatch.setattr(model, 'train_step', counting_train_step)
  batch_sizes = []
  run_block = trainer.run_block

  def recording_run_block(batch_indices):
    batch_sizes.extend([np.shape(batch_indices)[1]] * len(batch_indices))
    run_block(batch_indices)

  monkeypatch.setattr(trainer, 'run_block', recording_run_block)
  lines = []
  training.train(model, trainer, train[:7], train[:7], str(tmp_path), seed=1,
                 max_steps=n_epochs * spe, eval_freq=0, out=lines.append)
  assert int(trainer.step.numpy()) == n_epochs * spe
  assert batch_sizes == n_epochs * ([batch_size] * n_full + [last])
  np.testing.assert_array_equal(counts.numpy(), np.ones([n_epochs, n_train]))
  steps = [int(l.split()[1][:-1]) for l in lines if l.startswith('Step ')]
  assert steps == [spe * (e + 1) for e in range(n_epochs)]


def test_evaluate_combines_sample_groups_exactly():
  """Groups of EVAL_SAMPLE_GROUP samples combine into the bound of all
  samples."""
  group, n_groups, n_images = evaluation.EVAL_SAMPLE_GROUP, 3, 4
  rng = np.random.RandomState(0)
  f = rng.normal(-100, 5, size=(n_groups, group, n_images))
  calls = []

  def fake_iw_bound(x):
    k = len(calls)
    calls.append(int(x.shape[0]))
    bound = np.log(np.mean(np.exp(f[k] + 100), axis=0)) - 100
    return tf.constant(bound), tf.constant(f[k].mean(axis=0))

  data_ = np.zeros((n_images, 784), np.float32)
  bound, elbo = evaluation.evaluate(fake_iw_bound, data_, n_groups * group)
  assert calls == [n_images] * n_groups  # one call per group, all images
  all_samples = f.reshape(n_groups * group, n_images)
  expected = np.mean(np.log(np.mean(np.exp(all_samples + 100), axis=0)) - 100)
  assert bound == pytest.approx(expected, abs=1e-9)
  assert elbo == pytest.approx(all_samples.mean(), abs=1e-9)


def test_iw_bound_is_at_least_the_elbo():
  rng = np.random.RandomState(0)
  train = (rng.rand(50, 784) < 0.3).astype(np.float32)
  model, _ = make_trainer('model=SBN,n_layer=2', train)
  fn = evaluation.make_iw_bound_fn(model, 784)
  bound, elbo = evaluation.evaluate(fn, train[:20], 100)
  assert np.isfinite(bound) and bound > elbo


def test_evaluation_without_xla_gives_the_xla_bound():
  """Where XLA's fusion emitters are off the bound runs in the graph
  executor (jit_compile=False); same seed, same noise (drawn outside XLA
  either way), so the same figures up to float rounding."""
  rng = np.random.RandomState(0)
  train = (rng.rand(50, 784) < 0.3).astype(np.float32)
  results = []
  for jit_compile in (True, False):
    model, _ = make_trainer('model=SBN,n_layer=2', train)
    fn = evaluation.make_iw_bound_fn(model, 784, jit_compile=jit_compile)
    results.append(evaluation.evaluate(fn, train[:20], 100))
  np.testing.assert_allclose(results[0], results[1], rtol=1e-5)


def test_xla_emitter_choice(monkeypatch):
  """The fusion emitters are turned off where the compilation's memory would
  pass 1 GB (SBNTrackGradVariances from two layers, Dynamic REBAR and RELAX
  from three linear or two nonlinear layers), and a user's own setting of
  the flag in XLA_FLAGS wins."""
  flag = '--xla_cpu_use_fusion_emitters'
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  runtime.use_xla_fusion_emitters(True)
  assert 'XLA_FLAGS' not in os.environ and runtime.xla_fusion_emitters_enabled()
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_max_isa=AVX2')
  runtime.use_xla_fusion_emitters(False)
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_max_isa=AVX2 %s=false' % flag
  assert not runtime.xla_fusion_emitters_enabled()
  monkeypatch.setenv('XLA_FLAGS', flag + '=true')
  runtime.use_xla_fusion_emitters(False)
  assert os.environ['XLA_FLAGS'] == flag + '=true'
  assert runtime.xla_fusion_emitters_enabled()

  def emitters(text):
    hparams = parse_hparams(text)
    return runtime.xla_fusion_emitters(hparams)
  assert not emitters('model=SBNTrackGradVariances,n_layer=2')
  assert emitters('model=SBNTrackGradVariances,n_layer=1')
  assert emitters('model=SBNDynamicRebar,n_layer=2')
  assert not emitters('model=SBNDynamicRebar,n_layer=2,nonlinear=true')
  assert not emitters('model=SBNRelax,n_layer=3')
  assert emitters('model=SBNRebar,n_layer=4')


def test_200_steps_on_real_mnist_raise_the_elbo(mirror_data_dir):
  hparams = parse_hparams('model=SBN,learning_rate=0.001')
  train, valid, _ = data.load_data(hparams, mirror_data_dir)
  model, trainer = make_trainer('model=SBN,learning_rate=0.001', train)
  order = training.epoch_permutation(0, 0, train.shape[0])[:200 * 24]
  means = []
  for block in order.reshape(2, 100, 24):
    trainer.run_block(block)
    values, log_variance = trainer.epoch_summary()
    trainer.reset_epoch_summary()
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(log_variance))
    means.append(values[0])
  assert int(trainer.step.numpy()) == 200
  # The initial ELBO is about -540; 100 steps of Adam gain tens of nats.
  assert means[1] > means[0] + 10, means


def run_script(*args, check=True):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, str(REPO / 'rebar_train.py')]
                          + list(args), capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=600)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def load_checkpoint(working_dir):
  run_dir = run_dir_of(working_dir)
  reader = tf.train.load_checkpoint(str(run_dir / 'checkpoints'))
  dtypes = reader.get_variable_to_dtype_map()
  return {k: reader.get_tensor(k) for k in dtypes
          if dtypes[k] != tf.string and not k.startswith('save_counter')}


def test_resume_and_determinism(mirror_data_dir, tmp_path):
  """Same seed, same printed values; a run stopped at step 150 and resumed
  ends at step 300 in exactly the state of an uninterrupted run."""
  common = ['--hparams=model=SBNRebar,n_layer=2', '--seed=7',
            '--eval_freq=0', '--data_dir=%s' % mirror_data_dir,
            '--download=false']
  whole = run_script(*common, '--working_dir=%s' % (tmp_path / 'a'),
                     '--max_steps=300')
  again = run_script(*common, '--working_dir=%s' % (tmp_path / 'b'),
                     '--max_steps=300')
  assert whole.stdout.startswith('Step 300: [')
  assert whole.stdout == again.stdout
  first = run_script(*common, '--working_dir=%s' % (tmp_path / 'c'),
                     '--max_steps=150')
  second = run_script(*common, '--working_dir=%s' % (tmp_path / 'c'),
                      '--max_steps=300')
  assert first.stdout.startswith('Step 150: [')
  assert second.stdout.startswith('Step 300: [')
  assert 'Resumed from' in second.stderr
  whole_state = load_checkpoint(tmp_path / 'a')
  resumed_state = load_checkpoint(tmp_path / 'c')
  assert set(whole_state) == set(resumed_state)
  # The count of metrics records is bookkeeping, not training state: the
  # stopped run recorded one more line (its step 150).
  del whole_state['trainer/records/.ATTRIBUTES/VARIABLE_VALUE']
  for name, value in whole_state.items():
    np.testing.assert_array_equal(value, resumed_state[name], err_msg=name)
  run_dir = run_dir_of(tmp_path / 'c')
  assert json.load(open(run_dir / 'hparams.json'))['n_layer'] == 2
  steps = [json.loads(l)['step'] for l in open(run_dir / 'metrics.jsonl')]
  assert steps == [150, 300]
  # TensorBoard's event files go to a folder named by the short name.
  (tensorboard_dir,) = (tmp_path / 'c' / 'tensorboard').iterdir()
  assert tensorboard_dir.name == 'model=SBNRebar,n_layer=2'
  assert any(f.startswith('events.out.tfevents')
             for f in os.listdir(tensorboard_dir))


@pytest.mark.parametrize('args,fragment', [
    (['--hparams=model=SBNFoo'], 'unknown model'),
    (['--hparams=n_layer=x'], 'takes an int'),
    (['--eval_samples=150'], 'multiple of 100'),
    (['--working_dir=/proc/forbidden'], '--working_dir'),
    (['--download=false', '--data_dir={tmp_path}/no_data_here'],
     '`download_data --datasets=binarized_mnist'),
    (['--hparams=model=SBN,', 'n_layer=2'], 'unexpected arguments: n_layer=2'),
    (['--hparams=n_layer=1,n_layer=2'], 'n_layer'),
    (['--hparams=learning_rate=inf'], 'learning_rate'),
    (['--hparams=temperature=nan'], 'temperature'),
    (['--max_steps=0'], '--max_steps must be a positive'),
    (['--eval_freq=-1'], '--eval_freq must be'),
    (['--checkpoint_secs=-1'], '--checkpoint_secs must be'),
    (['--threads=-1'], '--threads must be'),
    (['--hparams=n_hidden=1000000'], 'n_hidden'),
    (['--hparams=n_samples=100000'], 'n_samples'),
])
def test_user_errors_end_with_one_clear_line(args, fragment, tmp_path,
                                            mirror_data_dir):
  """Later flags win, so each case's own flags override these; `{tmp_path}`
  in a case's flags is this test's temporary directory."""
  args = [a.format(tmp_path=tmp_path) for a in args]
  result = run_script('--working_dir=%s' % tmp_path, '--max_steps=1',
                      '--data_dir=%s' % mirror_data_dir, '--download=false',
                      *args, check=False)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert fragment in last, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr


def test_batch_larger_than_the_training_set_is_refused(mirror_data_dir,
                                                      tmp_path):
  result = run_script('--hparams=batch_size=60000', '--max_steps=1',
                      '--data_dir=%s' % mirror_data_dir, '--download=false',
                      '--working_dir=%s' % tmp_path, check=False)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert 'batch_size 60000 is larger than the training set (50000' in last
  assert not list(tmp_path.iterdir())  # no run directory for a refused run


def test_tensorboard_gets_every_bound_and_the_hparams(tmp_path):
  """The event files (in `tensorboard_dir`, none in the run directory) hold
  the training tags, the validation and test bounds, and the hparams as a
  text summary."""
  rng = np.random.RandomState(0)
  train = (rng.rand(100, 784) < 0.3).astype(np.float32)
  model, trainer = make_trainer('model=SBNDynamicRebar', train)
  run_dir, tensorboard_dir = tmp_path / 'run', tmp_path / 'tb' / 'short'
  run_dir.mkdir()
  training.train(model, trainer, train[:7], train[:7], str(run_dir), seed=1,
                 max_steps=5, eval_freq=1, out=lambda line: None,
                 tensorboard_dir=str(tensorboard_dir))
  assert not [f for f in os.listdir(run_dir) if 'tfevents' in f]
  tags, text = set(), None
  for name in os.listdir(tensorboard_dir):
    for event in tf.compat.v1.train.summary_iterator(
        str(tensorboard_dir / name)):
      for value in event.summary.value:
        tags.add(value.tag)
        if value.tag == 'hparams':
          text = tf.make_ndarray(value.tensor).item().decode()
  assert tags == {'Train ELBO', 'Temperature', 'log grad variance',
                  'Valid IW bound', 'Valid ELBO', 'Test IW bound',
                  'Test ELBO', 'hparams'}
  assert '| model | SBNDynamicRebar |' in text
