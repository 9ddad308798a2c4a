"""Configs of program "rl": their checks, the sweep's commands and the report.

Unit tests load small configs and run the report on hand-written
metrics.jsonl files, where the right answers are known (no TensorFlow).
One end-to-end test sweeps two 20-episode CartPole runs with two workers,
with a solved threshold low enough (solved_return=15 over 5 episodes) that
they stop when solved, and checks the report against their records.
"""

import csv
import json
import pathlib
import shlex
import statistics
import sys

import pytest

from rebar import report
from rebar import sweep
from rebar import sweep_runner
from rebar.rl import report as rl_report
from rebar.rl.settings import parse_settings

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'


def write_rl_config(path, **overrides):
  """A small valid rl config (CartPole, two methods, one rate, two trials)
  with `overrides` (a value of ... removes the key)."""
  content = {
      'program': 'rl',
      'settings': {'CartPole-v1': 'env=CartPole-v1'},
      'models': ['a2c', 'relax'],
      'learning_rates': [0.01],
      'trials': 2,
      'max_steps': 100,
      'flags': {'log_every': 10, 'stop_when_solved': True},
      'selection': {'metric': 'episodes_to_solve'},
  }
  content.update(overrides)
  content = {k: v for k, v in content.items() if v is not ...}
  path.write_text(json.dumps(content))
  return path


def load(tmp_path, name='c.json', **overrides):
  return sweep.load_config(write_rl_config(tmp_path / name, **overrides))


# ------------------------------------------------------------ configs

def test_rl_runs_are_named_as_rebar_rl_names_them(tmp_path):
  config = load(tmp_path, trials=[3, 7])
  assert config.program == 'rl' and config.eval_freq == 0
  runs = sweep.expand_runs(config)
  assert [(r.model, r.learning_rate, r.trial, r.seed) for r in runs] == [
      ('a2c', 0.01, 3, 3), ('a2c', 0.01, 7, 7), ('relax', 0.01, 3, 3),
      ('relax', 0.01, 7, 7)]
  for r in runs:
    assert r.hparams == ('env=CartPole-v1,method=%s,learning_rate=0.01,'
                         'trial=%d' % (r.model, r.trial))
    assert r.name == parse_settings(r.hparams).run_name()
  drawn = load(tmp_path, 'd.json', seed_from_trial=False)
  assert all(r.seed is None for r in sweep.expand_runs(drawn))


def test_rl_model_grid_sweeps_rl_hparams(tmp_path):
  config = load(tmp_path, models=['a2c'],
                model_grids={'a2c': {'n_step': [0, 5]}})
  runs = sweep.expand_runs(config)
  assert [(r.grid, r.trial) for r in runs] == [
      ((('n_step', 0),), 1), ((('n_step', 0),), 2),
      ((('n_step', 5),), 1), ((('n_step', 5),), 2)]
  assert [parse_settings(r.hparams).n_step for r in runs] == [0, 0, 5, 5]
  assert len({r.name for r in runs}) == 4


def test_rl_run_command(tmp_path):
  config = load(tmp_path)
  run = sweep.expand_runs(config)[0]
  # Data flags mean nothing to a policy-gradient run: not passed on.
  argv = sweep.run_command(run, config, '/w', 20, 2,
                           {'data_dir': '/data', 'download': 'false'})
  assert argv == [
      sys.executable, '-m', 'rebar.rl',
      '--hparams=env=CartPole-v1,method=a2c,learning_rate=0.01,trial=1',
      '--working_dir=/w', '--max_episodes=20', '--seed=1', '--log_every=10',
      '--stop_when_solved=true', '--threads=2']


def test_rl_command_needs_this_package_importable(tmp_path, monkeypatch):
  config = load(tmp_path)
  run = sweep.expand_runs(config)[0]
  monkeypatch.setattr(sweep, '_package_seen_from', lambda cwd: None)
  with pytest.raises(sweep.SweepError) as e:
    sweep.run_command(run, config, '/w', 20, 0, {})
  assert 'pip install .' in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('content, message', [
    (dict(program='ppo'), '"program" must be one of "train", "rl"'),
    (dict(models=['ppo']), "method ppo: unknown method 'ppo'; choose one of "
     'a2c, relax, lax'),
    (dict(settings={'pendulum': 'env=InvertedPendulum-v5'}),
     'InvertedPendulum-v5 has continuous actions; method relax does not '
     'apply, choose a2c or lax'),
    (dict(settings={'x': 'env=Pong-v5'}), "unknown environment 'Pong-v5'"),
    (dict(settings={'x': 'env=CartPole-v1,method=a2c'}),
     'sets method, which the sweep sets per run'),
    (dict(settings={'x': 'n_step=two'}), 'hparam n_step takes an int'),
    (dict(flags={'final_eval': True}), "has 'final_eval', which the sweep "
     'does not pass on; allowed: log_every, stop_when_solved'),
    (dict(flags={'stop_when_solved': 1}),
     "flag 'stop_when_solved' takes a bool"),
    (dict(flags={'log_every': 0}), "flag 'log_every' must be at least 1"),
    (dict(eval_freq=4), '"eval_freq" does not apply to program "rl"'),
    (dict(selection={'metric': 'valid_iw_bound'}),
     '"selection.metric" must be one of episodes_to_solve'),
    (dict(model_grids={'a2c': {'temperature': [0.1]}}),
     "unknown hparam 'temperature'"),
    (dict(model_grids={'a2c': {'method': ['relax']}}),
     'sweeps method, which the sweep sets per run'),
])
def test_rl_config_errors_are_one_line_naming_the_fix(tmp_path, content,
                                                       message):
  with pytest.raises(sweep.ConfigError) as e:
    load(tmp_path, **content)
  assert message in str(e.value)
  assert '\n' not in str(e.value)


def test_eval_freq_rules(tmp_path):
  assert load(tmp_path, eval_freq=0).eval_freq == 0
  # A train config still needs it, and "program": "train" is the default.
  train = dict(program=..., hparams='task=sbn',
               settings={'linear_1_layer': 'n_layer=1'},
               models=['SBNNVIL'], learning_rates=[0.001],
               selection={'metric': 'train_elbo'}, flags={})
  with pytest.raises(sweep.ConfigError) as e:
    load(tmp_path, 't.json', **train)
  assert "missing key 'eval_freq'" in str(e.value)
  implicit = load(tmp_path, 'i.json', eval_freq=1, **train)
  explicit = load(tmp_path, 'e.json', eval_freq=1,
                  **dict(train, program='train'))
  assert implicit.program == explicit.program == 'train'
  assert sweep.expand_runs(implicit) == sweep.expand_runs(explicit)


def test_shipped_rl_configs(tmp_path):
  expected = {'rl_cartpole': ('CartPole-v1', ['a2c', 'relax'], [0.01, 0.003],
                              3000),
              'rl_lunarlander': ('LunarLander-v3', ['a2c', 'relax'], [0.003],
                                 5000),
              'rl_invertedpendulum': ('InvertedPendulum-v5', ['a2c', 'lax'],
                                      [0.003], 3000)}
  published = json.loads((CONFIGS / 'published.json').read_text())
  for name, (env, methods, rate, episodes) in expected.items():
    config = sweep.load_config(CONFIGS / (name + '.json'))
    assert config.program == 'rl'
    assert (list(config.settings), config.models, config.learning_rates,
            config.trials, config.max_steps) == (
                [env], methods, rate, [1, 2, 3, 4, 5], episodes)
    assert config.flags == {'log_every': 10, 'stop_when_solved': True}
    assert {parse_settings(r.hparams).env for r in sweep.expand_runs(
        config)} == {env}
    table = published['tables'][config.published['table']]['rows'][env]
    assert set(table) == set(methods)
  rows = published['tables']['rl_episodes_to_solve']['rows']
  assert (rows['CartPole-v1']['a2c']['value'], rows['CartPole-v1']['a2c'][
      'se'], rows['InvertedPendulum-v5']['lax']['value']) == (1152, 90, 2067)


def test_print_commands_of_an_rl_config(tmp_path, capsys):
  path = write_rl_config(tmp_path / 'c.json')
  w = tmp_path / 'w'
  assert sweep.main([str(path), '--working_dir=%s' % w,
                     '--print_commands', '--max_steps=30']) == 0
  lines = capsys.readouterr().out.splitlines()
  config = sweep.load_config(path)
  runs = sweep.expand_runs(config)
  assert len(lines) == len(runs) == 4
  for line, run in zip(lines, runs):
    argv = shlex.split(line)
    assert argv == sweep.run_command(run, config, str(w), 30, 0, {})
    assert argv[1:3] == ['-m', 'rebar.rl'] and '--max_episodes=30' in argv
    assert not any(a.startswith('--threads') for a in argv)


def test_a_run_stopped_when_solved_is_finished(tmp_path):
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  finished = run_dir / 'finished.json'
  finished.write_text(json.dumps({'step': 40, 'solved_at': 40,
                                  'stopped_when_solved': True}))
  assert sweep.is_finished(str(run_dir), 3000)
  finished.write_text(json.dumps({'step': 40, 'solved_at': 40,
                                  'stopped_when_solved': False}))
  assert not sweep.is_finished(str(run_dir), 3000)
  assert sweep.is_finished(str(run_dir), 40)


def test_sweep_progress_counts_a_solved_run_as_done(tmp_path):
  """The progress line does not wait for the episodes a run stopped when
  solved will never run."""
  run = sweep.expand_runs(load(tmp_path))[0]
  w = tmp_path / 'w'
  run_dir = pathlib.Path(run.run_dir(str(w)))
  run_dir.mkdir(parents=True)
  (run_dir / 'metrics.jsonl').write_text(json.dumps({'step': 40}) + '\n')
  progress = sweep_runner.SweepProgress([run], str(w), 3000,
                                        lambda line: None)
  assert progress.steps_done() == 40
  (run_dir / 'finished.json').write_text(json.dumps(
      {'step': 40, 'solved_at': 40, 'stopped_when_solved': True}))
  assert progress.steps_done() == 3000


def test_each_report_refuses_the_other_program(tmp_path, capsys):
  rl = write_rl_config(tmp_path / 'rl.json')
  (tmp_path / 'w').mkdir()
  assert report.main([str(rl), '--working_dir=%s' % (tmp_path / 'w')]) == 2
  err = capsys.readouterr().err
  assert 'is of program "rl"; report it with `python -m rebar.rl.report`' \
      in err and len(err.strip().splitlines()) == 1
  train = CONFIGS / 'smoke' / 'smoke.json'
  assert rl_report.main([str(train), '--working_dir=%s' %
                         (tmp_path / 'w')]) == 2
  assert 'report it with `python -m rebar.report`' in capsys.readouterr().err


# ------------------------------------------------------------ the report

def write_rl_run(working_dir, config, method, rate, trial, episodes,
                 solved=None, finished=True, log_every=10):
  """A run directory whose records go to `episodes` episodes, solved at
  `solved` (or not); record k has k-step episodes and acting ms k, so that
  the step-weighted means differ from plain ones. Returns its records."""
  run = next(r for r in sweep.expand_runs(config)
             if (r.model, r.learning_rate, r.trial) == (method, rate, trial))
  run_dir = pathlib.Path(run.run_dir(str(working_dir)))
  run_dir.mkdir(parents=True)
  records = []
  for k, step in enumerate(range(log_every, episodes + log_every, log_every)):
    step = min(step, episodes)
    n = step - (records[-1]['step'] if records else 0)
    records.append({
        'kind': 'train', 'step': step, 'wall_s': 0.1 * step,
        'env_steps': 0, 'values': {'mean_return': float(step)},
        'log_variance': -1.0 - k, 'returns': [float(k + 1)] * n,
        'lengths': [k + 1] * n,
        'solved_at': solved if solved is not None and step >= solved
                     else None,
        'solved_return': 475.0, 'solved_window': 100,
        'ms_per_step_acting': float(k + 1), 'ms_per_step_update': 2.0,
        'action_mismatches': 0})
  with open(run_dir / 'metrics.jsonl', 'w') as f:
    for record in records:
      f.write(json.dumps(record) + '\n')
  if finished:
    (run_dir / 'finished.json').write_text(json.dumps({
        'step': episodes, 'solved_at': solved,
        'stopped_when_solved': solved is not None}))
  return records


@pytest.fixture
def hand_written(tmp_path):
  """Two methods x two rates x three trials, every kind of outcome:

    a2c   0.01   solved 40, solved 60, unsolved (100)      score 66.7
    a2c   0.003  solved 20, unsolved (100), missing        score 60: chosen
    relax 0.01   solved 30 (still running), running at 50, solved 70
    relax 0.003  all missing
  """
  config = load(tmp_path, learning_rates=[0.01, 0.003], trials=3,
                published={'file': str(CONFIGS / 'published.json'),
                           'table': 'rl_episodes_to_solve'})
  w = tmp_path / 'w'
  records = {
      ('a2c', 0.01, 1): write_rl_run(w, config, 'a2c', 0.01, 1, 40, 40),
      ('a2c', 0.01, 2): write_rl_run(w, config, 'a2c', 0.01, 2, 60, 60),
      ('a2c', 0.01, 3): write_rl_run(w, config, 'a2c', 0.01, 3, 100),
      ('a2c', 0.003, 1): write_rl_run(w, config, 'a2c', 0.003, 1, 20, 20),
      ('a2c', 0.003, 2): write_rl_run(w, config, 'a2c', 0.003, 2, 100),
      ('relax', 0.01, 1): write_rl_run(w, config, 'relax', 0.01, 1, 35, 30,
                                       finished=False),
      ('relax', 0.01, 2): write_rl_run(w, config, 'relax', 0.01, 2, 50,
                                       finished=False),
      ('relax', 0.01, 3): write_rl_run(w, config, 'relax', 0.01, 3, 70, 70),
  }
  return config, w, records


def read_csv(path):
  with open(path) as f:
    return {(r['method'], float(r['learning_rate'])): r
            for r in csv.DictReader(f)}


def test_report_of_hand_written_runs(hand_written, tmp_path):
  config, w, records = hand_written
  out = tmp_path / 'out'
  rows, _ = rl_report.make_report(config, str(w), str(out), figures=False)
  assert len(rows) == 4
  table = read_csv(out / 'c.csv')
  a2c = table[('a2c', 0.01)]
  # Solved runs only: 40 and 60; the unsolved one counted beside them.
  assert (float(a2c['episodes_to_solve_mean']),
          float(a2c['episodes_to_solve_se']),
          float(a2c['episodes_to_solve_median'])) == (50.0, 10.0, 50.0)
  assert (a2c['solved'], a2c['unsolved'], a2c['unsolved_episodes_max'],
          a2c['per_trial']) == ('2', '1', '100', '1=40;2=60;3=unsolved')
  assert float(a2c['selection_score']) == pytest.approx(200 / 3)
  assert a2c['selected'] == '0'
  best = table[('a2c', 0.003)]
  assert (best['selected'], float(best['selection_score']), best['missing'],
          best['episodes_to_solve_se']) == ('1', 60.0, '1', '')
  relax = table[('relax', 0.01)]
  assert (relax['solved'], relax['unfinished'], relax['per_trial'],
          relax['finished']) == ('2', '1', '1=30;2=running;3=70', '1')
  assert float(relax['episodes_to_solve_mean']) == 50.0
  assert table[('relax', 0.003)]['runs_with_data'] == '0'
  # ms per step weighted by steps, over the group's records.
  runs = [records[('a2c', 0.01, t)] for t in (1, 2, 3)]
  steps = [sum(r['lengths']) for rs in runs for r in rs]
  acting = [r['ms_per_step_acting'] for rs in runs for r in rs]
  assert float(a2c['ms_per_step_acting']) == pytest.approx(
      sum(a * s for a, s in zip(acting, steps)) / sum(steps))
  assert float(a2c['ms_per_step_update']) == pytest.approx(2.0)
  assert float(a2c['wall_s_per_run']) == pytest.approx((4 + 6 + 10) / 3)
  assert float(a2c['wall_s_per_episode']) == pytest.approx(0.1)
  assert (a2c['published_mean'], a2c['published_se']) == ('1152', '90')

  text = (out / 'c.md').read_text()
  assert ('| CartPole-v1 | a2c | 0.003 | 2/3 | 1 | 20.0 | 20.0 | 1 after 100 '
          '| 1,152 ± 90 [1] |') in text
  assert ('| CartPole-v1 | relax | 0.01 | 3/3 | 2 | 50.0 ± 20.0 | 50.0 | '
          '0, 1 running | 472 ± 114 [1] |') in text
  assert '| CartPole-v1 | a2c | 0.01 | 66.7 | 2/3 |  |' in text
  assert '| CartPole-v1 | a2c | 0.003 | 60.0 | 1/2 | yes |' in text
  assert '- CartPole-v1 a2c lr 0.003 trial 3: missing' in text
  assert '- CartPole-v1 relax lr 0.01 trial 2: running at episode 50' in text
  assert '- CartPole-v1 relax lr 0.01 trial 1: running at episode 35' in text
  assert ('- CartPole-v1: solved when the mean return of the last 100 '
          'episodes reaches 475.') in text
  assert ('python -m rebar.rl.report %s --working_dir=W --out=OUT'
          % config.path) in text


def test_report_figures_and_the_hint_without_matplotlib(
    hand_written, tmp_path, monkeypatch, capsys):
  pytest.importorskip('matplotlib')
  config, w, _ = hand_written
  _, written = rl_report.make_report(config, str(w), str(tmp_path / 'f'))
  assert written == [('CartPole-v1', 'c_CartPole-v1.png')]
  assert (tmp_path / 'f' / 'c_CartPole-v1.png').stat().st_size > 1000
  assert '![CartPole-v1](c_CartPole-v1.png)' in (
      tmp_path / 'f' / 'c.md').read_text()
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import fails
  assert rl_report.main([str(config.path), '--working_dir=%s' % w,
                         '--out=%s' % (tmp_path / 'g')]) == 0
  assert report.PLOTS_HINT in capsys.readouterr().out
  assert (tmp_path / 'g' / 'c.md').is_file()


# ------------------------------------------------------------ end to end

def test_sweep_and_report_of_two_cartpole_runs(tmp_path, monkeypatch,
                                              capsys):
  pytest.importorskip('gymnasium')
  # `python -m rebar.rl` finds this package from the repository root.
  monkeypatch.chdir(REPO)
  path = write_rl_config(
      tmp_path / 'tiny.json', models=['a2c'], max_steps=20,
      settings={'CartPole-v1': 'env=CartPole-v1,solved_return=15.0,'
                               'solved_window=5'})
  w = tmp_path / 'w'
  assert sweep.main([str(path), '--working_dir=%s' % w, '--workers=2']) == 0
  status = json.loads((w / sweep.STATUS_FILE).read_text())
  assert status['last_sweep']['counts'] == {'finished': 2}, status
  config = sweep.load_config(path)
  solved = []
  for run in sweep.expand_runs(config):
    run_dir = pathlib.Path(run.run_dir(str(w)))
    done = json.loads((run_dir / 'finished.json').read_text())
    records = [json.loads(l) for l in open(run_dir / 'metrics.jsonl')]
    assert done['solved_at'] == records[-1]['solved_at']
    assert done['stopped_when_solved'] == (done['solved_at'] is not None)
    if done['solved_at'] is not None:
      solved.append(done['solved_at'])
  assert solved, 'no run reached the low threshold'
  capsys.readouterr()
  # Solved runs are finished for a second sweep, whatever their step.
  assert sweep.main([str(path), '--working_dir=%s' % w]) == 0
  assert '2 runs: 2 already finished, 0 to run' in capsys.readouterr().out

  out = tmp_path / 'report'
  assert rl_report.main([str(path), '--working_dir=%s' % w, '--out=%s' % out,
                         '--no_figures']) == 0
  (row,) = read_csv(out / 'tiny.csv').values()
  assert int(row['solved']) == len(solved)
  assert float(row['episodes_to_solve_mean']) == statistics.mean(solved)
  assert float(row['episodes_to_solve_median']) == statistics.median(solved)
  assert row['runs_with_data'] == row['finished'] == '2'
  text = (out / 'tiny.md').read_text()
  assert '| CartPole-v1 | a2c | 0.01 | 2/2 | %d |' % len(solved) in text
  assert 'last 5 episodes reaches 15.' in text
  assert 'Runs not finished' not in text
