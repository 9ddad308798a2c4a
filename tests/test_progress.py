"""Progress lines: their content (rate, ETA), their rate limit, and that
training, evaluation and the sweep write them to stderr, not stdout."""

import json
import logging

import numpy as np

from rebar import models
from rebar import progress
from rebar import sweep_runner
from rebar import train as training
from rebar.hparams import parse_hparams


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_line_gives_rate_elapsed_and_eta_over_this_process():
  clock, lines = FakeClock(), []
  p = progress.Progress('training', 1000, done=200, interval_s=30,
                        clock=clock, write=lines.append)
  clock.now += 60.0
  assert p.update(500, 'epoch 3 of 10')
  # 300 steps in 60 s: 5 steps/s; 500 left: 100 s.
  assert lines == ['training: 500/1,000 steps, epoch 3 of 10, 5 steps/s, '
                   'elapsed 1 min 00 s, ETA 1 min 40 s']


def test_lines_are_at_least_interval_apart_unless_forced():
  clock, lines = FakeClock(), []
  p = progress.Progress('x', 10, interval_s=30, clock=clock,
                        write=lines.append)
  clock.now += 29.0
  assert not p.update(1)
  clock.now += 1.0
  assert p.update(2)
  clock.now += 10.0
  assert not p.update(3)
  assert p.update(4, force=True)
  assert len(lines) == 2


def test_duration_reads_as_hours_minutes_seconds():
  assert progress.duration(42.4) == '42 s'
  assert progress.duration(185) == '3 min 05 s'
  assert progress.duration(6660) == '1 h 51 min'
  assert progress.eta(0, 10, 5.0) is None


def test_training_and_evaluation_write_progress_to_the_log_only(
    tmp_path, monkeypatch, caplog):
  """With the interval at 0 s, every block and evaluation chunk writes a
  line through absl logging; stdout (`out`) keeps the epoch lines only."""
  monkeypatch.setattr(progress, 'INTERVAL_S', 0.0)
  rng = np.random.RandomState(0)
  train = (rng.rand(100, 784) < 0.3).astype(np.float32)
  model = models.build_model(parse_hparams('model=SBN'), train.mean(axis=0),
                             0)
  trainer = training.Trainer(model, train, block_size=2)
  out = []
  with caplog.at_level(logging.INFO):
    training.train(model, trainer, train[:7], train[:7], str(tmp_path),
                   seed=1, max_steps=10, eval_freq=1, out=out.append)
  messages = [r.getMessage() for r in caplog.records]
  training_lines = [m for m in messages if m.startswith('training: ')]
  assert training_lines and 'epoch 2 of 2' in training_lines[-1]
  assert training_lines[-1].startswith('training: 10/10 steps')
  assert any(m.startswith('valid evaluation at step 5: 7/7 images')
             for m in messages)
  for line in out:
    if not line.startswith(('Step ', 'Valid ', 'Test ')):
      float(line)  # the log variance


def test_sweep_progress_counts_the_runs_own_records(tmp_path):
  class Run:

    def __init__(self, name):
      self.name = name

    def run_dir(self, working_dir):
      return str(working_dir / self.name)

  runs = [Run('a'), Run('b')]
  (tmp_path / 'a').mkdir()
  # The last record's step counts; a partial last line is skipped.
  (tmp_path / 'a' / 'metrics.jsonl').write_text(
      json.dumps({'kind': 'train', 'step': 40}) + '\n'
      + json.dumps({'kind': 'valid', 'step': 50}) + '\n{"kind": "tr')
  clock, lines = FakeClock(), []
  p = sweep_runner.SweepProgress(runs, tmp_path, 100, lines.append,
                                 interval_s=30, clock=clock)
  assert p.progress.start_done == 50
  (tmp_path / 'b').mkdir()
  (tmp_path / 'b' / 'metrics.jsonl').write_text(
      json.dumps({'kind': 'train', 'step': 75}) + '\n')
  clock.now += 30.0
  p.update(0, 2)
  # 75 steps in 30 s over both runs; 75 of 200 left: 30 s.
  assert lines == ['sweep: 125/200 steps, 0 of 2 runs finished, 2 running, '
                   '2 steps/s, elapsed 30 s, ETA 30 s']
