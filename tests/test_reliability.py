"""Runs a researcher can trust through crashes, signals, a second process,
damaged files and divergence.

The kill tests compare a run that was killed (SIGKILL at named points, at a
random moment, and stopped by SIGTERM and SIGHUP) and resumed with an
uninterrupted run of the same seed, record by record: stdout, metrics.jsonl
(but for wall-clock times) and the TensorBoard scalars. Training is
deterministic for a fixed seed and thread count, so the comparisons are
exact.
"""

import glob
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from rebar import models
from rebar import rundir
from rebar import sweep
from rebar import checkpoints as checkpoints_module
from rebar import runlog
from rebar import train as training
from rebar.hparams import parse_hparams
from tests.runs import run_dir_of

REPO = pathlib.Path(__file__).resolve().parents[1]
HPARAMS = 'model=SBN,learning_rate=0.0003'
# One epoch (2,084 steps) with its evaluations, then 216 steps of the next.
MAX_STEPS = 2300


def command(data_dir, working_dir, *extra, max_steps=MAX_STEPS, seed=True):
  return ([sys.executable, str(REPO / 'rebar_train.py'), '--threads=1',
           '--data_dir=%s' % data_dir, '--download=false',
           '--hparams=' + HPARAMS, '--max_steps=%d' % max_steps,
           '--checkpoint_secs=0', '--eval_freq=1', '--eval_images=200',
           '--working_dir=%s' % working_dir]
          + (['--seed=1'] if seed else []) + list(extra))


def environment(**extra):
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **extra)


def run(argv, **env):
  return subprocess.run(argv, capture_output=True, text=True,
                        env=environment(**env), cwd=str(REPO), timeout=600)


def records(run_dir):
  """metrics.jsonl parsed strictly (no NaN or Infinity), without wall_s."""
  def refuse(constant):
    raise ValueError('not strict JSON: %s' % constant)
  out = []
  with open(run_dir / 'metrics.jsonl') as f:
    for line in f:
      record = json.loads(line, parse_constant=refuse)
      record.pop('wall_s')
      out.append(record)
  return out


def scalars(run_dir):
  """Every TensorBoard scalar of the run: sorted (step, tag, value). Its
  event files are in <working_dir>/tensorboard/<short name>, none in the
  run directory."""
  assert not glob.glob(str(run_dir / 'events.out.tfevents.*'))
  hparams = parse_hparams(','.join(
      '%s=%s' % item for item in json.load(open(run_dir / 'hparams.json'))
      .items()))
  found = []
  paths = glob.glob(str(run_dir.parent / 'tensorboard' / hparams.short_name()
                        / 'events.out.tfevents.*'))
  assert paths
  for path in paths:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag != 'hparams':  # the text summary
          found.append((event.step, value.tag,
                        float(tf.make_ndarray(value.tensor))))
  assert found
  return sorted(found)


@pytest.fixture(scope='module')
def uninterrupted(mirror_data_dir, tmp_path_factory):
  working_dir = tmp_path_factory.mktemp('uninterrupted')
  result = run(command(mirror_data_dir, working_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  run_dir = run_dir_of(working_dir)
  return result.stdout.splitlines(), records(run_dir), scalars(run_dir)


def wait_for(path, text, process, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if process.poll() is not None:
      return False
    if path.exists() and text in path.read_text(errors='replace'):
      return True
    time.sleep(0.05)
  raise AssertionError('%r did not appear in %s' % (text, path))


def stopped_by_signal(argv, sig, log):
  """Runs argv and sends `sig` once it has logged its run directory (its
  stop handlers are installed by then). Returns (returncode, stdout)."""
  with open(log, 'w') as err:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err,
                               text=True, env=environment(), cwd=str(REPO))
    if wait_for(log, 'Run directory', process):
      process.send_signal(sig)
    stdout, _ = process.communicate(timeout=300)
  return process.returncode, stdout


def killed_at_random(argv, delay):
  process = subprocess.Popen(argv, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True,
                             env=environment(), cwd=str(REPO))
  try:
    stdout, _ = process.communicate(timeout=delay)
  except subprocess.TimeoutExpired:
    process.kill()
    stdout, _ = process.communicate()
  return process.returncode, stdout


def test_killed_and_stopped_runs_resume_to_the_uninterrupted_records(
    uninterrupted, mirror_data_dir, tmp_path):
  """SIGKILL right after an epoch's last block (no record written), in the
  validation and in the test evaluation, between a checkpoint's write and
  its bookkeeping, and at a random moment; SIGTERM and SIGHUP stop with a
  checkpoint and status 128 + signal. After the last restart the run has
  every record exactly once, in order, as the uninterrupted run, and each
  attempt printed a contiguous stretch of the uninterrupted stdout that
  starts no later than where the previous attempts stopped."""
  expected_lines, expected_records, expected_scalars = uninterrupted
  argv = command(mirror_data_dir, tmp_path / 'w')
  outputs = []
  # Evaluations have 4 chunks each (200 images, 50 per call): chunk 2 is in
  # the validation set, chunk 6 in the test set.
  for point in ('epoch_end:1', 'evaluation:2', 'evaluation:6',
                'checkpoint_write:2'):
    result = run(argv, REBAR_KILL_AT=point)
    assert result.returncode == -signal.SIGKILL, (point, result.stderr[-2000:])
    outputs.append(result.stdout)
  for sig in (signal.SIGTERM, signal.SIGHUP):
    code, stdout = stopped_by_signal(argv, sig, tmp_path / 'stderr.txt')
    assert code == 128 + sig, (sig, (tmp_path / 'stderr.txt').read_text())
    assert 'checkpoint saved' in (tmp_path / 'stderr.txt').read_text()
    outputs.append(stdout)
  code, stdout = killed_at_random(argv, random.Random(14).uniform(4, 9))
  outputs.append(stdout)
  final = run(argv)
  assert final.returncode == 0, final.stderr[-3000:]
  outputs.append(final.stdout)

  covered = 0
  for stdout in outputs:
    lines = stdout.splitlines()
    starts = [j for j in range(covered + 1)
              if expected_lines[j:j + len(lines)] == lines]
    assert starts, (lines, expected_lines, covered)
    covered = max(covered, starts[0] + len(lines))
  assert covered == len(expected_lines)
  run_dir = run_dir_of(tmp_path / 'w')
  assert records(run_dir) == expected_records
  assert scalars(run_dir) == expected_scalars
  assert json.load(open(run_dir / 'finished.json')) == {'step': MAX_STEPS}


def test_damaged_state_is_survived(uninterrupted, mirror_data_dir, tmp_path):
  """A run left with a truncated newest checkpoint, an empty run.json (no
  --seed given again), a cut-off last line of metrics.jsonl, a stale lock
  and leftovers of interrupted writes resumes from the older checkpoint and
  ends with the uninterrupted run's records."""
  first = run(command(mirror_data_dir, tmp_path, max_steps=2200))
  assert first.returncode == 0, first.stderr[-3000:]
  run_dir = run_dir_of(tmp_path)
  checkpoints = run_dir / 'checkpoints'
  (data_file,) = checkpoints.glob('ckpt-2200.data-*')
  data_file.write_bytes(data_file.read_bytes()[:100])
  (checkpoints / 'ckpt-2300_temp').mkdir()
  (run_dir / 'run.json').write_text('')
  (run_dir / 'hparams.json.123.tmp').write_text('{')
  with open(run_dir / 'metrics.jsonl', 'a') as f:
    f.write('{"kind": "train", "st')
  (run_dir / 'lock').write_text('999999999 elsewhere\n')

  result = run(command(mirror_data_dir, tmp_path, seed=False))
  assert result.returncode == 0, result.stderr[-3000:]
  for warning in ('ckpt-2200 is damaged', 'ckpt-2300_temp',
                  'run.json is damaged', 'Taking over the lock',
                  'Resumed from'):
    assert warning in result.stderr, warning
  assert not (checkpoints / 'ckpt-2300_temp').exists()
  assert not (run_dir / 'hparams.json.123.tmp').exists()
  assert json.load(open(run_dir / 'run.json')) == {'seed': 1}
  assert records(run_dir) == uninterrupted[1]
  assert scalars(run_dir) == uninterrupted[2]


def test_a_damaged_record_the_state_needs_is_named(tmp_path):
  run_dir = tmp_path
  (run_dir / 'metrics.jsonl').write_text(
      '{"kind": "train", "step": 5, "values": {}}\ngarbage\n')
  with pytest.raises(rundir.RunDirError, match=r'metrics.jsonl line 2 is '
                     r'damaged .*delete that line'):
    runlog.RunLog(str(run_dir), committed=2, resume_step=10)
  log = runlog.RunLog(str(run_dir), committed=1, resume_step=10)
  assert [r['step'] for r in log.records] == [5]


def test_records_are_strict_json(tmp_path):
  """SBNTrackGradVariances' printed vector holds -inf after its first
  epoch: metrics.jsonl records it as null."""
  log = runlog.RunLog(str(tmp_path), committed=0, resume_step=0)
  log.write({'kind': 'train', 'step': 3, 'wall_s': 1.0,
             'values': {'elbo': -100.0, 'x': float('-inf')},
             'log_variance': {'a': float('nan'), 'b': 1.5},
             'temperature': 0.5})
  (record,) = records(tmp_path)
  assert record['values'] == {'elbo': -100.0, 'x': None}
  assert record['log_variance'] == {'a': None, 'b': 1.5}


@pytest.mark.parametrize('damage', ['truncate', 'zero', 'remove_data'])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
  rng = np.random.RandomState(0)
  train = (rng.rand(48, 784) < 0.3).astype(np.float32)

  def trained(run_dir, max_steps):
    model = models.build_model(parse_hparams('model=SBN'), train.mean(0), 0)
    # The graph executor: this test is about files, and compiles faster so.
    trainer = training.Trainer(model, train, block_size=2, jit_compile=False)
    training.train(model, trainer, train[:2], train[:2], str(run_dir), seed=0,
                   max_steps=max_steps, eval_freq=0, checkpoint_secs=0,
                   block_size=2, out=lambda line: None)
    return [v.numpy() for v in model.model_variables]

  whole = trained(tmp_path / 'whole', 6)
  trained(tmp_path / 'cut', 4)
  checkpoints = tmp_path / 'cut' / 'checkpoints'
  assert checkpoints_module.checkpoint_steps(checkpoints) == [2, 4]
  (data_file,) = checkpoints.glob('ckpt-4.data-*')
  index = checkpoints / 'ckpt-4.index'
  if damage == 'truncate':
    data_file.write_bytes(data_file.read_bytes()[:50])
  elif damage == 'zero':
    index.write_bytes(bytes(index.stat().st_size))
  else:
    data_file.unlink()
  resumed = trained(tmp_path / 'cut', 6)
  for a, b in zip(whole, resumed):
    np.testing.assert_array_equal(a, b)
  assert (checkpoints / 'damaged' / 'ckpt-4.index').exists()


def test_second_process_on_a_run_directory_stops_at_once(mirror_data_dir,
                                                         tmp_path):
  hparams = parse_hparams(HPARAMS)
  run_dir = tmp_path / hparams.run_name()
  run_dir.mkdir()
  holder = rundir.RunDirLock(str(run_dir)).acquire()
  try:
    start = time.time()
    result = run(command(mirror_data_dir, tmp_path))
  finally:
    holder.release()
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert 'in use by process %d' % os.getpid() in last, result.stderr
  assert 'Traceback' not in result.stderr
  assert not (run_dir / 'metrics.jsonl').exists()
  assert time.time() - start < 30  # before TensorFlow is even imported


def test_the_lock_is_exclusive_and_released(tmp_path):
  first = rundir.RunDirLock(str(tmp_path)).acquire()
  with pytest.raises(rundir.RunDirError, match='in use by process %d'
                     % os.getpid()):
    rundir.RunDirLock(str(tmp_path)).acquire()
  first.release()
  assert (tmp_path / 'lock').read_text() == ''
  rundir.RunDirLock(str(tmp_path)).acquire().release()


def test_a_diverging_run_fails_in_the_sweep_with_its_reason(mirror_data_dir,
                                                            tmp_path):
  """learning_rate=1e6: the run stops with one line naming the step, exits
  1, writes no finished.json, and the sweep marks it failed with that
  line."""
  config = tmp_path / 'diverge.json'
  config.write_text(json.dumps({
      'settings': {'linear': 'n_layer=1'}, 'models': ['SBN'],
      'learning_rates': [1e6], 'trials': 1, 'max_steps': 300,
      'eval_freq': 0, 'selection': {'metric': 'train_elbo'}}))
  results = sweep.run_sweep(
      sweep.load_config(config), str(tmp_path / 'runs'), threads=1,
      data_flags={'data_dir': str(mirror_data_dir), 'download': 'false'},
      out=lambda line: None)
  (status,) = results.values()
  assert status['status'] == 'failed'
  assert status['returncode'] == 1
  assert 'training diverged at step' in status['log_tail'][-1]
  assert 'learning_rate' in status['log_tail'][-1]
  (run_dir,) = (tmp_path / 'runs').glob('*model_SBN*')
  assert not (run_dir / 'finished.json').exists()


def test_nonfinite_parameters_are_found():
  """The between-blocks check sees a parameter that is nan or inf, whether a
  model or an auxiliary one."""
  rng = np.random.RandomState(0)
  train = (rng.rand(48, 784) < 0.3).astype(np.float32)
  model = models.build_model(parse_hparams('model=SBNNVIL'), train.mean(0), 0)
  trainer = training.Trainer(model, train, jit_compile=False)
  assert bool(trainer.parameters_finite())
  for variable, value in ((model.aux_variables[0], np.nan),
                          (model.model_variables[-1], np.inf)):
    saved = variable.numpy()
    variable.assign(np.full(saved.shape, value, np.float32))
    assert not bool(trainer.parameters_finite()), variable.name
    variable.assign(saved)
  assert bool(trainer.parameters_finite())
