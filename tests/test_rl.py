"""The policy-gradient command and loop (rebar/rl): bad input ends in one
line, records and TensorBoard summaries are written, a resumed run is the
uninterrupted run, and a short Cart-Pole run learns.

The estimators' unbiasedness is tested in tests/test_rl_estimators.py.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

gymnasium = pytest.importorskip('gymnasium')

from rebar.rl import __main__ as rl_main  # pylint: disable=g-import-not-at-top
from rebar.rl import envs
from rebar.rl import settings as settings_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Fields of a record that depend on timing, not on the computation.
TIMING = ('wall_s', 'ms_per_step_acting', 'ms_per_step_update')


def records(run_dir):
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def without_timing(rows):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def same_records(got, expected):
  """Records equal but for float rounding: separate processes' TensorFlow
  kernels differ at about 1e-7 (relative) now and then (docs/rl.md), so
  the floats are compared to 1e-5; the episodes' returns and lengths, the
  steps and counts exactly."""
  got, expected = without_timing(got), without_timing(expected)
  assert [r['step'] for r in got] == [r['step'] for r in expected]
  for a, b in zip(got, expected):
    assert a.keys() == b.keys()
    for key in a:
      if key in ('values', 'log_variance'):
        assert a[key] == pytest.approx(b[key], rel=1e-5), key
      else:
        assert a[key] == b[key], key


def run_dir_of(working_dir, hparams, seed):
  """The run directory of --hparams=hparams --seed=seed (the seed is the
  trial where hparams name none)."""
  return os.path.join(working_dir, settings_lib.parse_settings(
      hparams, trial=seed).run_name())


def run(argv, capsys):
  """rl_main.main(argv): (exit status, stdout, stderr). Every call in this
  process passes --threads=1: TensorFlow's pools are set once per process."""
  try:
    code = rl_main.main(argv)
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


@pytest.mark.parametrize('argv, expected', [
    (['--env=Pong-v5'], 'unknown environment \'Pong-v5\'; choose one of'),
    (['--method=reinforce'], 'unknown method \'reinforce\'; choose one of'),
    (['--env=InvertedPendulum-v5', '--method=relax'],
     'InvertedPendulum-v5 has continuous actions; method relax does not '
     'apply, choose a2c or lax'),
    (['--env=CartPole-v1', '--method=lax'], 'choose a2c or relax'),
    (['--env=CartPole-v1', '--hparams=env=LunarLander-v3'],
     '--env=CartPole-v1 and --hparams env=LunarLander-v3 disagree'),
    (['--hparams=gamma=1.5'], 'gamma must be in (0, 1]'),
    (['--hparams=n_hidden=x'], 'hparam n_hidden takes an int'),
    (['--hparams=depth=3'], 'unknown hparam \'depth\''),
    (['--max_episodes=0'], 'max_episodes'),
])
def test_bad_input_ends_in_one_line(argv, expected, capsys, tmp_path):
  code, _, err = run(argv + ['--working_dir=%s' % tmp_path], capsys)
  assert code == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert expected in lines[0], err
  assert not os.listdir(tmp_path)  # nothing created


def test_missing_gymnasium_or_extra_names_the_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'gymnasium', None)
  with pytest.raises(envs.EnvError, match=r"pip install '\.\[rl\]'"):
    envs.make_env('CartPole-v1')
  monkeypatch.undo()

  def missing(name, **kwargs):
    raise gymnasium.error.DependencyNotInstalled('Box2D is not installed')
  monkeypatch.setattr(gymnasium, 'make', missing)
  with pytest.raises(envs.EnvError) as info:
    envs.make_env('LunarLander-v3')
  message = str(info.value)
  assert 'box2d extra' in message and "pip install '.[rl]'" in message


def test_a_run_writes_records_summaries_and_finished(capsys, tmp_path):
  hparams = 'env=CartPole-v1,method=relax'
  code, out, _ = run(['--hparams=' + hparams, '--seed=3', '--max_episodes=20',
                      '--working_dir=%s' % tmp_path, '--threads=1'], capsys)
  assert code == 0
  lines = out.strip().splitlines()
  assert [l.split(':')[0] for l in lines] == ['Episode 10', 'Episode 20']
  assert 'mean return (last 20)' in lines[1] and 'log variance' in lines[1]
  run_dir = run_dir_of(str(tmp_path), hparams, 3)
  rows = records(run_dir)
  assert [r['step'] for r in rows] == [10, 20]
  assert sum(len(r['returns']) for r in rows) == 20
  assert rows[-1]['values']['mean_return'] == pytest.approx(
      np.mean([x for r in rows for x in r['returns']]))
  assert rows[-1]['env_steps'] == sum(sum(r['lengths']) for r in rows)
  assert all(np.isfinite(r['log_variance']) for r in rows)
  assert all(r['action_mismatches'] == 0 for r in rows)
  with open(os.path.join(run_dir, 'finished.json')) as f:
    assert json.load(f) == {'step': 20, 'solved_at': None,
                            'stopped_when_solved': False}
  with open(os.path.join(run_dir, 'run.json')) as f:
    assert json.load(f) == {'seed': 3}
  board = os.path.join(str(tmp_path), 'tensorboard',
                       settings_lib.parse_settings(hparams, trial=3).short_name())
  assert any(n.startswith('events.out.tfevents.') for n in os.listdir(board))
  # Run again: finished, nothing more is written.
  code, out, _ = run(['--hparams=' + hparams, '--seed=3', '--max_episodes=20',
                      '--working_dir=%s' % tmp_path, '--threads=1'], capsys)
  assert code == 0 and out == ''
  assert records(run_dir) == rows


def fresh_process(*argvs):
  """Runs rebar.rl's main on each argv in turn in one new Python process
  (TensorFlow there honours --threads=1, which makes a run deterministic;
  this test process may hold TensorFlow with other pools already)."""
  script = ('import sys\nfrom rebar.rl.__main__ import main\n'
            'for argv in %r:\n  code = main(argv)\n'
            '  if code:\n    sys.exit(code)\n' % (list(argvs),))
  subprocess.run([sys.executable, '-c', script], cwd=REPO, check=True,
                 capture_output=True, env=dict(os.environ, PYTHONPATH=REPO))


def test_stopped_and_resumed_runs_are_the_uninterrupted_run(tmp_path):
  """Episodes are seeded by their number and checkpoints fall on record
  boundaries, with the optimizers' state.

  RELAX on CartPole-v1: SIGINT mid-run ends it with exit 130 and a
  checkpoint at a record boundary; the same command then ends with the
  uninterrupted run's records. LAX on InvertedPendulum-v5: 20 episodes and
  then 10 more give the records of 30 in one go.
  """
  relax = 'env=CartPole-v1,method=relax'
  flags = ['--hparams=' + relax, '--seed=2', '--threads=1',
           '--max_episodes=40', '--log_every=5', '--stop_when_solved=false']
  env = dict(os.environ, PYTHONPATH=REPO)
  stopped = subprocess.Popen(
      [sys.executable, '-m', 'rebar.rl'] + flags +
      ['--working_dir=%s' % (tmp_path / 'a')], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in stopped.stdout:
    if line.startswith('Episode 10:'):
      stopped.send_signal(signal.SIGINT)
      break
  _, err = stopped.communicate(timeout=120)
  assert stopped.returncode == 130, err
  assert 'run the same command to resume' in err
  run_a = run_dir_of(str(tmp_path / 'a'), relax, 2)
  reached = records(run_a)[-1]['step']
  assert reached < 40 and reached % 5 == 0
  lax = 'env=InvertedPendulum-v5,method=lax,n_step=5'
  lax_flags = ['--hparams=' + lax, '--seed=5', '--threads=1',
               '--stop_when_solved=false']
  whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
  fresh_process(flags + ['--working_dir=%s' % (tmp_path / 'a')],
                flags + ['--working_dir=%s' % (tmp_path / 'b')],
                lax_flags + ['--max_episodes=30', '--working_dir=' + whole],
                lax_flags + ['--max_episodes=20', '--working_dir=' + parts],
                lax_flags + ['--max_episodes=30', '--working_dir=' + parts])
  same_records(records(run_a),
               records(run_dir_of(str(tmp_path / 'b'), relax, 2)))
  expected = records(run_dir_of(whole, lax, 5))
  assert [r['step'] for r in expected] == [10, 20, 30]
  same_records(records(run_dir_of(parts, lax, 5)), expected)


def test_cartpole_learns_in_a_short_run(capsys, tmp_path):
  """120 episodes of RELAX on CartPole-v1 (seed 1): the mean return of the
  last 100 episodes rises far above a random policy's (about 22; measured
  here below 30 over 100 episodes of the initial, near-uniform policy)."""
  hparams = 'env=CartPole-v1,method=relax'
  code, _, _ = run(['--hparams=' + hparams, '--seed=1', '--max_episodes=120',
                    '--working_dir=%s' % tmp_path, '--threads=1',
                    '--log_every=20'], capsys)
  assert code == 0
  rows = records(run_dir_of(str(tmp_path), hparams, 1))
  first = rows[0]['values']['window_return']
  assert first < 30
  assert rows[-1]['values']['mean_return'] > 100


def test_solved_stops_the_run_and_is_recorded(capsys, tmp_path):
  hparams = 'env=CartPole-v1,method=a2c,solved_return=30,solved_window=10'
  code, out, _ = run(['--hparams=' + hparams, '--seed=1',
                      '--max_episodes=500', '--working_dir=%s' % tmp_path,
                      '--threads=1'], capsys)
  assert code == 0
  run_dir = run_dir_of(str(tmp_path), hparams, 1)
  rows = records(run_dir)
  solved_at = rows[-1]['solved_at']
  returns = [x for r in rows for x in r['returns']]
  assert len(returns) == solved_at == rows[-1]['step']
  assert np.mean(returns[-10:]) >= 30
  # Not solved one episode earlier.
  assert all(np.mean(returns[k - 10:k]) < 30 for k in range(10, solved_at))
  assert 'solved at episode %d' % solved_at in out
  with open(os.path.join(run_dir, 'finished.json')) as f:
    assert json.load(f) == {'step': solved_at, 'solved_at': solved_at,
                            'stopped_when_solved': True}
