"""The experiment tooling: config checks, the sweep and the report.

Unit tests run the report's aggregation on hand-written metrics.jsonl files,
where the right answers are known. The real-data tests run the sweep of
configs/smoke on the offline mirror with two workers (about a minute on two
cores), then a second sweep in the same working dir that must skip the
finished runs, resume an unfinished one and record failing runs without
stopping.
"""

import json
import math
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from rebar import report
from rebar import sweep
from rebar.hparams import parse_hparams

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = REPO / 'configs' / 'smoke' / 'smoke.json'
CONFIGS = REPO / 'configs'


def write_config(path, **overrides):
  """A small valid config (two rates, two trials) with `overrides`."""
  content = {
      'hparams': 'task=sbn',
      'settings': {'linear_1_layer': 'n_layer=1'},
      'models': ['SBNNVIL', 'SBNRebar'],
      'learning_rates': [0.0003, 0.001],
      'trials': 2,
      'max_steps': 100,
      'eval_freq': 1,
      'selection': {'metric': 'valid_iw_bound'},
  }
  content.update(overrides)
  content = {k: v for k, v in content.items() if v is not ...}
  path.write_text(json.dumps(content))
  return path


def write_run(working_dir, config, setting, model, rate, trial, records,
              grid=()):
  """A run directory holding `records` as metrics.jsonl (and finished.json);
  `grid` the run's point of its model's own grid."""
  run = next(r for r in sweep.expand_runs(config)
             if (r.setting, r.model, r.learning_rate, r.trial, r.grid)
             == (setting, model, rate, trial, grid))
  run_dir = pathlib.Path(run.run_dir(str(working_dir)))
  run_dir.mkdir(parents=True)
  with open(run_dir / 'metrics.jsonl', 'w') as f:
    for record in records:
      f.write(json.dumps(record) + '\n')
  return run_dir


def train(step, elbo, log_variance=-3.0):
  return {'kind': 'train', 'step': step, 'wall_s': 1.0,
          'values': {'elbo': elbo}, 'log_variance': log_variance,
          'temperature': 0.5}


def evaluation(kind, step, bound):
  return {'kind': kind, 'step': step, 'wall_s': 1.0,
          'values': {'iw_bound': bound, 'elbo': bound - 10},
          'eval_samples': 100}


def history(train_elbos, valid_bounds, test_bounds, spe=10):
  """Records of epochs 1.. with an evaluation after each."""
  records = []
  for i, (e, v, t) in enumerate(zip(train_elbos, valid_bounds, test_bounds)):
    step = spe * (i + 1)
    records += [train(step, e), evaluation('valid', step, v),
                evaluation('test', step, t)]
  return records


# ------------------------------------------------------------ one run

def test_summarize_run_best_epochs():
  # The best validation is at step 20; the test bound reported is the one at
  # step 20, not the best test bound (step 30).
  records = history([-150, -120, -125], [-110, -100, -105], [-112, -109, -99])
  summary = report.summarize_run(records)
  assert summary == {'last_step': 30, 'best_train_elbo': -120,
                     'best_train_step': 20, 'best_valid_iw_bound': -100,
                     'best_valid_step': 20, 'test_iw_bound': -109}


def test_summarize_run_without_evaluations_or_training():
  assert report.summarize_run([]) is None
  summary = report.summarize_run([train(10, -200), train(20, -190)])
  assert summary['best_train_elbo'] == -190
  assert summary['best_valid_iw_bound'] is None
  assert summary['test_iw_bound'] is None
  # A diverged epoch (NaN) does not become the best.
  summary = report.summarize_run([train(10, -200), train(20, float('nan'))])
  assert summary['best_train_elbo'] == -200


def test_read_metrics_skips_torn_lines_and_keeps_the_last_duplicate(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  lines = [json.dumps(train(10, -200)), json.dumps(evaluation('valid', 10, -1)),
           json.dumps(evaluation('valid', 10, -2)), '{"kind": "tra']
  path.write_text('\n'.join(lines))
  records = report.read_metrics(path)
  assert [(r['kind'], r['step']) for r in records] == [('train', 10),
                                                       ('valid', 10)]
  assert records[1]['values']['iw_bound'] == -2
  assert report.read_metrics(tmp_path / 'absent.jsonl') == []


def test_mean_and_standard_error():
  mean, se, n = report.mean_se([1.0, 2.0, 3.0, 4.0])
  assert (mean, n) == (2.5, 4)
  # Sample standard deviation sqrt(5/3), divided by sqrt(4).
  assert se == pytest.approx(math.sqrt(5 / 3) / 2)
  assert report.mean_se([7.0]) == (7.0, None, 1)
  assert report.mean_se([None, 3.0, None]) == (3.0, None, 1)
  assert report.mean_se([]) == (None, None, 0)


# ------------------------------------------------------------ a config

@pytest.fixture
def hand_written(tmp_path):
  """Two rates x two trials of SBNNVIL: 0.001 trains better (higher training
  ELBO) but validates worse, so the rule must pick 0.0003. SBNRebar has
  training records only."""
  config = sweep.load_config(write_config(tmp_path / 'c.json'))
  w = tmp_path / 'w'
  data = {
      (0.0003, 1): history([-130, -120], [-100, -104], [-101, -99]),
      (0.0003, 2): history([-131, -125], [-103, -102], [-106, -100]),
      (0.001, 1): history([-110, -100], [-108, -109], [-90, -90]),
      (0.001, 2): history([-115, -105], [-107, -110], [-91, -92]),
  }
  for (rate, trial), records in data.items():
    write_run(w, config, 'linear_1_layer', 'SBNNVIL', rate, trial, records)
  write_run(w, config, 'linear_1_layer', 'SBNRebar', 0.0003, 1,
            [train(10, -140), train(20, -135)])
  write_run(w, config, 'linear_1_layer', 'SBNRebar', 0.001, 1,
            [train(10, -130)])
  return config, w


def test_aggregate_and_select(hand_written):
  config, w = hand_written
  groups = report.aggregate(config, report.collect(config, str(w)))
  low = groups[('linear_1_layer', 'SBNNVIL', 0.0003)]
  # Trial 1: best valid -100 at step 10 (test -101); trial 2: -102 at step
  # 20 (test -100).
  assert low['valid_iw_bound'][:2] == (-101, pytest.approx(1.0))
  assert low['test_iw_bound'][:2] == (-100.5, pytest.approx(0.5))
  assert low['train_elbo'][:2] == (-122.5, pytest.approx(2.5))
  assert (low['runs'], low['trials'], low['steps_min']) == (2, 2, 20)
  high = groups[('linear_1_layer', 'SBNNVIL', 0.001)]
  assert high['valid_iw_bound'][0] == -107.5
  assert high['train_elbo'][0] == -102.5

  chosen = report.select(config, groups)
  assert chosen[('linear_1_layer', 'SBNNVIL')] == (0.0003, 'valid_iw_bound')
  # SBNRebar has no validation records: the training ELBO decides, and the
  # reason says so.
  rate, reason = chosen[('linear_1_layer', 'SBNRebar')]
  assert rate == 0.001 and reason.startswith('train_elbo (no valid_iw_bound')

  # The other rule picks the rate with the better training ELBO.
  config.selection['metric'] = 'train_elbo'
  assert report.select(config, groups)[('linear_1_layer', 'SBNNVIL')] == (
      0.001, 'train_elbo')


def test_selection_tie_goes_to_the_first_listed_rate(tmp_path):
  config = sweep.load_config(write_config(tmp_path / 'c.json', trials=1))
  for rate in (0.0003, 0.001):
    write_run(tmp_path / 'w', config, 'linear_1_layer', 'SBNNVIL', rate, 1,
              history([-120], [-100], [-100]))
  groups = report.aggregate(config, report.collect(config,
                                                   str(tmp_path / 'w')))
  assert report.select(config, groups)[('linear_1_layer', 'SBNNVIL')][0] == (
      0.0003)
  # No data at all: nothing selected.
  assert report.select(config, groups)[('linear_1_layer', 'SBNRebar')] == (
      None, 'no data')


def test_report_files_from_hand_written_runs(hand_written, tmp_path):
  config, w = hand_written
  rows, _ = report.make_report(config, str(w), str(tmp_path / 'out'),
                               figures=False)
  text = (tmp_path / 'out' / 'report.md').read_text()
  # The selected row of SBNNVIL: lr 0.0003, mean ± SE as computed above.
  assert ('| linear_1_layer | SBNNVIL | 0.0003 | 2/2 | 20 | -122.50 ± 2.50 | '
          '— | — | -101.00 ± 1.00 | -100.50 ± 0.50 |') in text
  assert ('| linear_1_layer | SBNRebar | 0.001 | 1/2 | 10 | -130.00 |'
          in text)
  import csv  # pylint: disable=g-import-not-at-top
  with open(tmp_path / 'out' / 'report.csv') as f:
    table = list(csv.DictReader(f))
  assert len(table) == len(rows) == 4
  nvil = [r for r in table if r['model'] == 'SBNNVIL' and r['selected'] == '1']
  assert len(nvil) == 1 and float(nvil[0]['learning_rate']) == 0.0003
  assert float(nvil[0]['valid_iw_bound_mean']) == -101


def test_published_numbers_and_reference_checkpoints(tmp_path):
  """The published table is matched by setting and model; the reference
  checkpoints compare the record at the largest step not past them."""
  config = sweep.load_config(write_config(
      tmp_path / 'c.json', settings={'linear_2_layers': 'n_layer=2'},
      models=['SBNDynamicRebar'], learning_rates=[0.0003], trials=1,
      published={'file': str(CONFIGS / 'published.json'),
                 'table': 'generative_mnist'}))
  w = tmp_path / 'w'
  write_run(w, config, 'linear_2_layers', 'SBNDynamicRebar', 0.0003, 1,
            [train(50016, -130.0), train(100032, -120.0),
             train(102116, -119.0), evaluation('test', 100032, -115.0)])
  rows, _ = report.make_report(config, str(w), str(tmp_path / 'out'),
                               figures=False)
  assert rows[0]['published_train_elbo'] == -98.8
  assert rows[0]['published_label'] == 'REBAR'
  assert rows[0]['train_elbo_minus_published'] == pytest.approx(-119 + 98.8)
  text = (tmp_path / 'out' / 'report.md').read_text()
  assert '| -98.8 (REBAR) [1] | -20.20 |' in text
  # 100,032 reached (ours -120.0 there); 500,160 and later not reached.
  assert '| 100,032 | -121.5 | -120.00 | — | — | 1/1 |' in text
  assert '| 500,160 | -107.7 | — | — | — | 0/1 |' in text
  assert '| about 2,000,000 | -99 | — | -96.7 | — | 0/1 |' in text


def test_published_file_covers_the_paper_tables():
  content = json.loads((CONFIGS / 'published.json').read_text())
  for table in ('generative_mnist', 'generative_omniglot'):
    rows = content['tables'][table]['rows']
    assert set(rows) == {'nonlinear', 'linear_1_layer', 'linear_2_layers'}
    for setting, models in rows.items():
      # The nonlinear Concrete numbers are not used (shifted in the source).
      expected = {'SBNNVIL', 'SBNMuProp', 'SBNRebar', 'SBNDynamicRebar'}
      if setting != 'nonlinear':
        expected.add('SBNGumbel')
      assert set(models) == expected
      assert models['SBNRebar']['value'] == models['SBNDynamicRebar']['value']
      for entry in models.values():
        assert entry['source'] in content['sources']
  assert content['tables']['generative_mnist']['rows']['linear_1_layer'][
      'SBNNVIL']['value'] == -112.5


def test_without_matplotlib_the_cli_says_how_to_get_figures(
    hand_written, tmp_path, monkeypatch, capsys):
  config, w = hand_written
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import fails
  assert report.main([str(config.path), '--working_dir', str(w),
                      '--out', str(tmp_path / 'out')]) == 0
  assert report.PLOTS_HINT in capsys.readouterr().out
  assert (tmp_path / 'out' / 'report.md').is_file()


def test_figures_with_matplotlib(hand_written, tmp_path):
  pytest.importorskip('matplotlib')
  config, w = hand_written
  _, written = report.make_report(config, str(w), str(tmp_path / 'out'))
  assert written == [('linear_1_layer', 'fig_linear_1_layer.png')]
  assert (tmp_path / 'out' / 'fig_linear_1_layer.png').stat().st_size > 1000


def test_a_one_epoch_run_gives_its_figure_a_visible_point(tmp_path):
  """A run with one epoch record (as the smoke config's) is one point per
  panel: the figure's series hold it, and it is drawn with a marker (a
  line through one point draws nothing)."""
  from rebar import report_figures  # pylint: disable=g-import-not-at-top
  config = sweep.load_config(write_config(tmp_path / 'c.json'))
  w = tmp_path / 'w'
  write_run(w, config, 'linear_1_layer', 'SBNNVIL', 0.0003, 1,
            [train(10, -130, -2.5)])
  groups = report.aggregate(config, report.collect(config, str(w)))
  chosen = report.select(config, groups)
  series = report_figures.figure_series(config, groups, chosen,
                                        'linear_1_layer')
  assert [(panel, steps, values) for panel, _, steps, values in series] == [
      ('elbo', [10], [-130.0]), ('variance', [10], [-2.5])]
  assert report_figures.plot_style(1)['marker']
  assert report_figures.plot_style(report_figures.MARKERS_UP_TO + 1) == {}


def test_curves_average_trials_and_split_estimators():
  a = [train(10, -100, {'NVIL': 1.0, 'REBAR': -3.0}),
       train(20, -90, {'NVIL': 0.5, 'REBAR': -4.0})]
  b = [train(10, -110, {'NVIL': 3.0, 'REBAR': -5.0})]
  lines = report.curves([a, b])
  assert lines == {'elbo': ([10], [-105.0]),
                   'log_variance/NVIL': ([10], [2.0]),
                   'log_variance/REBAR': ([10], [-4.0])}


# ------------------------------------------------------------ configs

def test_every_shipped_config_loads():
  # The generative configs: 3 settings x (4 models x 3 rates + SBNGumbel x 3
  # rates x 4 temperatures) x 3 trials.
  expected = {'generative_mnist': 3 * (4 * 3 + 3 * 4) * 3,
              'generative_omniglot': 3 * (4 * 3 + 3 * 4) * 3,
              'structured_prediction': 45 * 3, 'variance_figure': 2,
              'mini_mnist_linear1': 5,
              # 4 models + SBNGumbel at 2 temperatures, one rate and trial.
              'full_mnist_linear1': 6,
              'relax_comparison': 4,
              # 4 settings x 7 models; the tracker on 2 settings.
              'binary_comparison': 28, 'binary_variance': 2,
              # Program rl: 2 methods x 5 trials on one task each.
              'rl_cartpole': 20, 'rl_lunarlander': 10,
              'rl_invertedpendulum': 10}
  shipped = {p.stem for p in CONFIGS.glob('*.json')} - {'published'}
  assert shipped == set(expected)
  for name, n_runs in expected.items():
    config = sweep.load_config(CONFIGS / (name + '.json'))
    assert len(sweep.expand_runs(config)) == n_runs, name
  mini = sweep.load_config(CONFIGS / 'mini_mnist_linear1.json')
  assert (mini.max_steps, mini.eval_freq, mini.learning_rates) == (
      50016, 4, [0.0003])
  assert mini.models == ['SBNNVIL', 'SBNMuProp', 'SBNRebar',
                         'SBNDynamicRebar', 'SBNGumbel']
  omni = sweep.load_config(CONFIGS / 'generative_omniglot.json')
  assert all(parse_hparams(r.hparams).task == 'omni'
             for r in sweep.expand_runs(omni))


def test_runs_expand_to_rebar_train_run_names(tmp_path):
  config = sweep.load_config(write_config(tmp_path / 'c.json'))
  runs = sweep.expand_runs(config)
  assert [(r.model, r.learning_rate, r.trial) for r in runs] == [
      (m, lr, t) for m in ('SBNNVIL', 'SBNRebar') for lr in (0.0003, 0.001)
      for t in (1, 2)]
  for r in runs:
    assert r.name == parse_hparams(
        'model=%s,learning_rate=%s,trial=%d' % (r.model, r.learning_rate,
                                                r.trial)).run_name()
    assert r.seed == r.trial
  config = sweep.load_config(write_config(tmp_path / 'd.json',
                                          seed_from_trial=False))
  assert all(r.seed is None for r in sweep.expand_runs(config))


def test_generative_configs_tune_concrete_temperature_only():
  for name in ('generative_mnist', 'generative_omniglot'):
    config = sweep.load_config(CONFIGS / (name + '.json'))
    # Concrete over a grid holding the original's default (0.5) and the
    # value measured best (0.1); Dynamic REBAR learns its temperature.
    assert config.model_grids == {
        'SBNGumbel': {'temperature': [0.1, 0.3, 0.5, 1.0]}}, name
    runs = sweep.expand_runs(config)
    assert {parse_hparams(r.hparams).temperature for r in runs
            if r.model == 'SBNGumbel'} == {0.1, 0.3, 0.5, 1.0}
    assert {parse_hparams(r.hparams).temperature for r in runs
            if r.model != 'SBNGumbel'} == {0.5}
    # The temperature-0.5 runs are the runs the config had without the grid.
    untuned = sweep.Config(**{**vars(config), 'model_grids': {}})
    assert [r.name for r in sweep.expand_runs(untuned)] == [
        r.name for r in runs
        if r.model != 'SBNGumbel' or dict(r.grid)['temperature'] == 0.5]


@pytest.mark.parametrize('content, message', [
    (None, 'does not exist'),
    ('{"settings": ', 'is not valid JSON (line 1'),
    ('[1]', 'top level must be a JSON object'),
    (dict(colour='red'), "unknown key 'colour'"),
    (dict(models=...), "missing key 'models'"),
    (dict(models=['SBNFoo']), "unknown model 'SBNFoo'"),
    (dict(settings={'a': 'n_layer=0'}), 'n_layer must be positive'),
    (dict(settings={'a': 'model=SBN'}), 'sets model, which the sweep sets'),
    (dict(settings={'a': 'n_layer=1', 'b': 'n_layer=1'}),
     'give the same runs'),
    (dict(learning_rates=[0.001, -1]), 'list of positive numbers'),
    (dict(trials='3'), "'trials' must be"),
    (dict(flags={'threads': 2}), "has 'threads', which the sweep does not"),
    (dict(flags={'final_eval': 1}), "flag 'final_eval' takes a bool"),
    (dict(selection={'metric': 'test_iw_bound'}),
     '"selection.metric" must be one of'),
    (dict(published={'file': 'x.json'}), '"published" must be'),
])
def test_config_errors_are_one_line_naming_the_fix(tmp_path, content,
                                                    message):
  path = tmp_path / 'c.json'
  if isinstance(content, str):
    path.write_text(content)
  elif content is not None:
    write_config(path, **content)
  with pytest.raises(sweep.ConfigError) as e:
    sweep.load_config(path)
  assert message in str(e.value)
  assert '\n' not in str(e.value)


def test_cli_errors_exit_2_with_one_line(tmp_path):
  config = write_config(tmp_path / 'c.json', colour='red')
  result = subprocess.run(
      [sys.executable, '-m', 'rebar.sweep', str(config), '--working_dir',
       str(tmp_path / 'w')], cwd=REPO, capture_output=True, text=True,
      check=False)
  assert result.returncode == 2
  assert result.stderr.startswith('rebar.sweep: error: config ')
  assert len(result.stderr.strip().splitlines()) == 1

  # A working dir that cannot be created (its parent is a file).
  (tmp_path / 'file').write_text('')
  config = write_config(tmp_path / 'ok.json')
  result = subprocess.run(
      [sys.executable, '-m', 'rebar.sweep', str(config), '--working_dir',
       str(tmp_path / 'file' / 'w')], cwd=REPO, capture_output=True,
      text=True, check=False)
  assert result.returncode == 2
  assert 'pass a writable --working_dir' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1

  result = subprocess.run(
      [sys.executable, '-m', 'rebar.report', str(config), '--working_dir',
       str(tmp_path / 'absent')], cwd=REPO, capture_output=True, text=True,
      check=False)
  assert result.returncode == 2
  assert 'pass the --working_dir the sweep used' in result.stderr


def test_finished_means_reached_max_steps(tmp_path):
  assert not sweep.is_finished(str(tmp_path), 100)
  (tmp_path / 'finished.json').write_text('{"step": 60}')
  # Finished at a lower --max_steps override: not finished for 100.
  assert not sweep.is_finished(str(tmp_path), 100)
  assert sweep.is_finished(str(tmp_path), 60)
  (tmp_path / 'finished.json').write_text('{"step": ')
  assert not sweep.is_finished(str(tmp_path), 60)


def test_fair_share_of_threads():
  assert sweep.fair_threads(2, cores=16) == 8
  assert sweep.fair_threads(3, cores=16) == 5
  assert sweep.fair_threads(4, cores=2) == 1


# ------------------------------------------------------------ model grids

GUMBEL_GRID = {'SBNGumbel': {'temperature': [0.1, 0.5]}}
T01, T05 = (('temperature', 0.1),), (('temperature', 0.5),)


def grid_config(tmp_path, name='g.json', **overrides):
  """SBNNVIL, and SBNGumbel over temperatures 0.1 and 0.5; two rates, two
  trials."""
  content = dict(models=['SBNNVIL', 'SBNGumbel'], model_grids=GUMBEL_GRID)
  content.update(overrides)
  return sweep.load_config(write_config(tmp_path / name, **content))


def test_model_grid_runs_are_the_product_in_order(tmp_path):
  config = grid_config(tmp_path)
  runs = sweep.expand_runs(config)
  expected = []
  for model in ('SBNNVIL', 'SBNGumbel'):
    for rate in (0.0003, 0.001):
      for grid in ((T01, T05) if model == 'SBNGumbel' else ((),)):
        for trial in (1, 2):
          expected.append((model, rate, grid, trial))
  assert [(r.model, r.learning_rate, r.grid, r.trial) for r in runs] == (
      expected)
  assert len(runs) == 2 * 2 + 2 * 2 * 2  # rates x trials (x temperatures)
  for r in runs:
    # The grid point is in the hparams string, so in the run's name.
    temperature = dict(r.grid).get('temperature')
    text = 'task=sbn,n_layer=1,model=%s,learning_rate=%r,%strial=%d' % (
        r.model, r.learning_rate,
        'temperature=%r,' % temperature if temperature else '', r.trial)
    assert r.hparams == text
    assert r.name == parse_hparams(text).run_name()
    assert ('temperature_%s' % (temperature or 0.5)) in r.name
    assert r.label == ('SBNGumbel (temperature=%r)' % temperature
                       if temperature else r.model)
  assert len({r.name for r in runs}) == len(runs)
  # The models without a grid keep the runs of the config without the key;
  # the grid point at the default (0.5) names the directory a run without
  # the grid had.
  plain = sweep.expand_runs(sweep.load_config(write_config(
      tmp_path / 'plain.json', models=['SBNNVIL', 'SBNGumbel'])))
  assert [r.name for r in plain] == [r.name for r in runs if r.grid != T01]
  assert [r.hparams for r in plain if r.model == 'SBNNVIL'] == [
      r.hparams for r in runs if r.model == 'SBNNVIL']


def test_model_grid_of_two_hparams_varies_the_last_fastest(tmp_path):
  config = grid_config(tmp_path, models=['SBNRebar'], learning_rates=[0.001],
                       trials=1, model_grids={'SBNRebar': {
                           'temperature': [0.1, 1], 'quadratic': [True, False]}})
  runs = sweep.expand_runs(config)
  # 1 (an int in JSON) is taken as the float 1.0.
  assert [r.grid for r in runs] == [
      (('temperature', t), ('quadratic', q))
      for t in (0.1, 1.0) for q in (True, False)]
  assert runs[1].hparams.endswith(
      'learning_rate=0.001,temperature=0.1,quadratic=false,trial=1')
  assert runs[1].label == 'SBNRebar (temperature=0.1, quadratic=false)'
  assert parse_hparams(runs[3].hparams).temperature == 1.0
  assert 'quadratic_False.' in runs[3].name
  assert len({r.name for r in runs}) == 4


@pytest.fixture
def grid_written(tmp_path):
  """SBNGumbel over rates x temperatures, two trials each: (0.001, 0.1)
  validates best, (0.0003, 0.5) trains best; SBNNVIL has training records at
  one rate only."""
  config = grid_config(tmp_path)
  w = tmp_path / 'w'
  # (rate, grid): (train ELBOs, valid bounds) of trials 1 and 2.
  data = {
      (0.0003, T01): ((-130, -128), (-105, -104)),
      (0.0003, T05): ((-100, -101), (-108, -109)),
      (0.001, T01): ((-120, -122), (-99, -101)),
      (0.001, T05): ((-125, -124), (-103, -102)),
  }
  for (rate, grid), (elbos, bounds) in data.items():
    for trial in (1, 2):
      write_run(w, config, 'linear_1_layer', 'SBNGumbel', rate, trial,
                history([elbos[trial - 1]], [bounds[trial - 1]],
                        [bounds[trial - 1] - 1]), grid=grid)
  write_run(w, config, 'linear_1_layer', 'SBNNVIL', 0.001, 1,
            [train(10, -140)])
  return config, w


def test_selection_runs_over_the_whole_grid(grid_written):
  config, w = grid_written
  groups = report.aggregate(config, report.collect(config, str(w)))
  best = groups[('linear_1_layer', 'SBNGumbel', 0.001, T01)]
  assert best['valid_iw_bound'][:2] == (-100, pytest.approx(1.0))
  assert (best['runs'], best['grid'], best['learning_rate']) == (2, T01,
                                                                  0.001)
  # Models without a grid keep their (setting, model, rate) keys.
  assert groups[('linear_1_layer', 'SBNNVIL', 0.001)]['runs'] == 1
  assert len(groups) == 2 + 4

  chosen = report.select(config, groups)
  choice = chosen[('linear_1_layer', 'SBNGumbel')]
  assert choice == (0.001, 'valid_iw_bound') and choice.grid == T01
  assert (choice.rate, choice.reason) == (0.001, 'valid_iw_bound')
  nvil = chosen[('linear_1_layer', 'SBNNVIL')]
  assert nvil[0] == 0.001 and nvil.grid == ()
  assert nvil[1].startswith('train_elbo (no valid_iw_bound')

  # The other metric picks the point that trains best: another rate and
  # another temperature.
  config.selection['metric'] = 'train_elbo'
  choice = report.select(config, groups)[('linear_1_layer', 'SBNGumbel')]
  assert choice == (0.0003, 'train_elbo') and choice.grid == T05


def test_grid_selection_tie_goes_to_the_first_in_run_order(tmp_path):
  config = grid_config(tmp_path, trials=1)
  for rate, grid in ((0.001, T01), (0.0003, T05), (0.001, T05)):
    write_run(tmp_path / 'w', config, 'linear_1_layer', 'SBNGumbel', rate, 1,
              history([-120], [-100], [-100]), grid=grid)
  groups = report.aggregate(config, report.collect(config,
                                                   str(tmp_path / 'w')))
  choice = report.select(config, groups)[('linear_1_layer', 'SBNGumbel')]
  # Rates as listed, then grid points: (0.0003, 0.5) comes first.
  assert (choice.rate, choice.grid) == (0.0003, T05)
  # One rate and a grid of one point: nothing to select between.
  single = grid_config(tmp_path, name='s.json', learning_rates=[0.001],
                       model_grids={'SBNGumbel': {'temperature': [0.1]}})
  groups = report.aggregate(single, report.collect(single,
                                                   str(tmp_path / 'w')))
  choice = report.select(single, groups)[('linear_1_layer', 'SBNGumbel')]
  assert choice == (0.001, 'only learning rate and grid point')
  assert choice.grid == T01


def test_report_names_the_chosen_grid_point(grid_written, tmp_path):
  config, w = grid_written
  rows, _ = report.make_report(config, str(w), str(tmp_path / 'out'),
                               figures=False)
  text = (tmp_path / 'out' / 'report.md').read_text()
  # The selected row says which temperature and rate won.
  assert ('| linear_1_layer | SBNGumbel (temperature=0.1) | 0.001 | 2/2 | 10 '
          '| -121.00 ± 1.00 | — | — | -100.00 ± 1.00 | -101.00 ± 1.00 |'
          in text)
  assert ('| linear_1_layer | SBNGumbel (temperature=0.1) | 0.001 | '
          'valid_iw_bound | 2/2 |' in text)
  assert ('| linear_1_layer | SBNGumbel (temperature=0.5) | 0.0003 |  | 2/2 |'
          in text)
  assert 'SBNGumbel: temperature 0.1, 0.5' in text
  assert '| linear_1_layer | SBNNVIL | 0.001 | 1/2 | 10 | -140.00 |' in text
  import csv  # pylint: disable=g-import-not-at-top
  with open(tmp_path / 'out' / 'report.csv') as f:
    table = list(csv.DictReader(f))
  assert len(table) == len(rows) == 2 + 4
  assert [(r['model'], r['learning_rate'], r['grid_point']) for r in table] == [
      ('SBNNVIL', '0.0003', ''), ('SBNNVIL', '0.001', ''),
      ('SBNGumbel', '0.0003', 'temperature=0.1'),
      ('SBNGumbel', '0.0003', 'temperature=0.5'),
      ('SBNGumbel', '0.001', 'temperature=0.1'),
      ('SBNGumbel', '0.001', 'temperature=0.5')]
  selected = [r for r in table if r['selected'] == '1']
  assert [(r['model'], r['learning_rate'], r['grid_point'], r['selected_by'])
          for r in selected] == [
              ('SBNNVIL', '0.001', '', 'train_elbo (no valid_iw_bound records '
               'yet)'),
              ('SBNGumbel', '0.001', 'temperature=0.1', 'valid_iw_bound')]


def test_figure_labels_the_chosen_grid_point(grid_written, tmp_path):
  pytest.importorskip('matplotlib')
  config, w = grid_written
  _, written = report.make_report(config, str(w), str(tmp_path / 'out'))
  assert written == [('linear_1_layer', 'fig_linear_1_layer.png')]


def test_reference_checkpoints_have_a_row_per_grid_point(tmp_path):
  config = sweep.load_config(write_config(
      tmp_path / 'c.json', settings={'linear_2_layers': 'n_layer=2'},
      models=['SBNDynamicRebar'], learning_rates=[0.0003], trials=1,
      model_grids={'SBNDynamicRebar': {'temperature': [0.1, 0.5]}},
      published={'file': str(CONFIGS / 'published.json'),
                 'table': 'generative_mnist'}))
  w = tmp_path / 'w'
  for grid, elbo in ((T01, -120.0), (T05, -125.0)):
    write_run(w, config, 'linear_2_layers', 'SBNDynamicRebar', 0.0003, 1,
              [train(100032, elbo)], grid=grid)
  report.make_report(config, str(w), str(tmp_path / 'out'), figures=False)
  text = (tmp_path / 'out' / 'report.md').read_text()
  for label, ours in (('temperature=0.1', '-120.00'),
                      ('temperature=0.5', '-125.00')):
    assert ('| linear_2_layers | SBNDynamicRebar (%s) | 0.0003 | 100,032 | '
            '-121.5 | %s | — | — | 1/1 |' % (label, ours)) in text


@pytest.mark.parametrize('content, message', [
    (dict(model_grids={'SBNGumbel': {'temperature': [0.1]}}),
     '"model_grids" SBNGumbel: SBNGumbel is not in "models"; add it there'),
    (dict(model_grids={'SBNFoo': {'temperature': [0.1]}}),
     'SBNFoo is not in "models"'),
    (dict(model_grids=[{'SBNRebar': {}}]), "'model_grids' must be model name"),
    (dict(model_grids={'SBNRebar': {}}),
     '"model_grids" SBNRebar must map hparam names to lists of values'),
    (dict(model_grids={'SBNRebar': [0.1, 0.5]}),
     '"model_grids" SBNRebar must map hparam names to lists of values'),
    (dict(model_grids={'SBNRebar': {'temprature': [0.1]}}),
     "\"model_grids\" SBNRebar: unknown hparam 'temprature'; valid names:"),
    (dict(model_grids={'SBNRebar': {'learning_rate': [0.1]}}),
     'SBNRebar sweeps learning_rate, which the sweep sets per run'),
    (dict(model_grids={'SBNRebar': {'trial': [1, 2]}}),
     'SBNRebar sweeps trial, which the sweep sets per run'),
    (dict(model_grids={'SBNRebar': {'temperature': []}}),
     'SBNRebar temperature must be a non-empty list of values'),
    (dict(model_grids={'SBNRebar': {'temperature': 0.1}}),
     'SBNRebar temperature must be a non-empty list of values'),
    (dict(model_grids={'SBNRebar': {'temperature': ['0.1']}}),
     'temperature takes float values, got "0.1"; write each value as a JSON '
     'number'),
    (dict(model_grids={'SBNRebar': {'temperature': [True]}}),
     'temperature takes float values, got true'),
    (dict(model_grids={'SBNRebar': {'n_samples': [1, 2.5]}}),
     'n_samples takes int values, got 2.5; write each value as a JSON '
     'integer'),
    (dict(model_grids={'SBNRebar': {'quadratic': ['false']}}),
     'quadratic takes bool values, got "false"; write each value as true or '
     'false'),
    (dict(model_grids={'SBNRebar': {'relax_cv': ['rebar,free']}}),
     'holds "," or "="'),
    (dict(model_grids={'SBNRebar': {'temperature': [0.1, 0.3, 0.1]}}),
     'SBNRebar temperature lists 0.1 twice; list each value once'),
    (dict(model_grids={'SBNRebar': {'temperature': [0.1, -1]}}),
     "model SBNRebar (temperature=-1.0): temperature must be positive"),
    (dict(model_grids={'SBNRebar': {'relax_cv': ['rebar', 'fixed']}}),
     "unknown relax_cv 'fixed'"),
    (dict(settings={'linear_1_layer': 'n_layer=1,temperature=0.3'},
          model_grids={'SBNRebar': {'temperature': [0.1, 0.5]}}),
     '"model_grids" SBNRebar sweeps temperature, which setting '
     "'linear_1_layer' also sets; set it in one place only"),
    (dict(hparams='task=sbn,temperature=0.3',
          model_grids={'SBNRebar': {'temperature': [0.1, 0.5]}}),
     'sweeps temperature, which the common "hparams" also sets'),
])
def test_bad_model_grids_stop_the_sweep_before_any_run(tmp_path, content,
                                                        message):
  path = write_config(tmp_path / 'c.json', **content)
  with pytest.raises(sweep.ConfigError) as e:
    sweep.load_config(path)
  assert message in str(e.value)
  assert '\n' not in str(e.value)
  # The command line stops with that one line before the working dir exists.
  result = subprocess.run(
      [sys.executable, '-m', 'rebar.sweep', str(path), '--working_dir',
       str(tmp_path / 'w')], cwd=REPO, capture_output=True, text=True,
      check=False)
  assert result.returncode == 2
  assert result.stderr == 'rebar.sweep: error: %s\n' % e.value
  assert not (tmp_path / 'w').exists()


# ------------------------------------------------------------ real runs

def sweep_cli(config, working_dir, data_dir, *extra):
  return subprocess.run(
      [sys.executable, '-m', 'rebar.sweep', str(config),
       '--working_dir=%s' % working_dir, '--workers=2',
       '--data_dir=%s' % data_dir, '--download=false'] + list(extra),
      cwd=REPO, capture_output=True, text=True, check=False, timeout=600)


def read_status(working_dir):
  return json.loads((working_dir / sweep.STATUS_FILE).read_text())


@pytest.fixture(scope='module')
def smoke(tmp_path_factory, mirror_data_dir):
  """configs/smoke swept with two workers, then reported."""
  w = tmp_path_factory.mktemp('smoke')
  result = sweep_cli(SMOKE, w, mirror_data_dir)
  assert result.returncode == 0, result.stdout + result.stderr
  status = read_status(w)
  out = w / 'report'
  result = subprocess.run(
      [sys.executable, '-m', 'rebar.report', str(SMOKE),
       '--working_dir=%s' % w, '--out=%s' % out], cwd=REPO,
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  return {'w': w, 'status': status, 'out': out,
          'config': sweep.load_config(SMOKE), 'data_dir': mirror_data_dir}


def direct_numbers(run_dir):
  """Best training ELBO, and the valid and test bounds at the best valid
  step, straight from metrics.jsonl (independently of rebar.report)."""
  records = [json.loads(l) for l in open(run_dir / 'metrics.jsonl')]
  elbo = max(r['values']['elbo'] for r in records if r['kind'] == 'train')
  valid = max((r for r in records if r['kind'] == 'valid'),
              key=lambda r: r['values']['iw_bound'])
  test = [r for r in records
          if r['kind'] == 'test' and r['step'] == valid['step']][-1]
  return elbo, valid['values']['iw_bound'], test['values']['iw_bound']


def test_smoke_sweep_runs_everything(smoke):
  config, w = smoke['config'], smoke['w']
  runs = sweep.expand_runs(config)
  assert len(runs) == 4
  assert smoke['status']['last_sweep']['counts'] == {'finished': 4}
  for run in runs:
    run_dir = pathlib.Path(run.run_dir(str(w)))
    assert json.loads((run_dir / 'finished.json').read_text()) == {
        'step': 250}
    assert (run_dir / sweep.LOG_FILE).is_file()
    assert smoke['status']['runs'][run.name]['status'] == 'finished'


def test_smoke_report_has_every_row_with_the_run_numbers(smoke):
  import csv  # pylint: disable=g-import-not-at-top
  config, w = smoke['config'], smoke['w']
  with open(smoke['out'] / 'report.csv') as f:
    table = list(csv.DictReader(f))
  assert len(table) == 4
  text = (smoke['out'] / 'report.md').read_text()
  by_group = {}
  for run in sweep.expand_runs(config):
    by_group[(run.model, run.learning_rate)] = direct_numbers(
        pathlib.Path(run.run_dir(str(w))))
  for row in table:
    elbo, valid, test = by_group[(row['model'], float(row['learning_rate']))]
    # The CSV keeps full precision: equal, not close.
    assert float(row['train_elbo_mean']) == elbo
    assert float(row['valid_iw_bound_mean']) == valid
    assert float(row['test_iw_bound_mean']) == test
    assert row['steps_min'] == row['steps_max'] == '250'
    assert row['trials_with_data'] == '1'
  for model in config.models:
    # The selected rate is the one with the higher validation bound.
    best_rate = max(config.learning_rates,
                    key=lambda lr: by_group[(model, lr)][1])
    elbo, valid, test = by_group[(model, best_rate)]
    published = {'SBNNVIL': -112.5, 'SBNRebar': -111.6}[model]
    row = ('| linear_1_layer | %s | %g | 1/1 | 250 | %.2f | %g [1] | %+.2f | '
           '%.2f | %.2f |' % (model, best_rate, elbo, published,
                              elbo - published, valid, test))
    assert row in text


def test_print_commands_are_the_commands_the_sweep_ran(smoke):
  config, w = smoke['config'], smoke['w']
  result = sweep_cli(SMOKE, w, smoke['data_dir'], '--print_commands')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  runs = sweep.expand_runs(config)
  assert len(lines) == len(runs)

  def without_threads(argv):
    return [a for a in argv if not a.startswith('--threads=')]

  for line, run in zip(lines, runs):
    argv = shlex.split(line)
    assert os.path.isabs(argv[1]) and argv[1].endswith('rebar_train.py')
    assert '--hparams=' + run.hparams in argv
    assert '--working_dir=%s' % w in argv
    ran = smoke['status']['runs'][run.name]
    assert ran['status'] == 'finished'
    assert without_threads(argv) == without_threads(shlex.split(
        ran['command']))


@pytest.fixture(scope='module')
def second_sweep(smoke, tmp_path_factory):
  """The smoke working dir swept again with a config that adds an Omniglot
  setting (no Omniglot data: its runs fail at once) listed first, after one
  smoke run was made unfinished."""
  config, w = smoke['config'], smoke['w']
  runs = sweep.expand_runs(config)
  unfinished = runs[1]
  before = {}
  for run in runs:
    path = pathlib.Path(run.run_dir(str(w))) / 'metrics.jsonl'
    before[run.name] = (path.read_bytes(), path.stat().st_mtime_ns)
  os.remove(os.path.join(unfinished.run_dir(str(w)), 'finished.json'))
  raw = json.loads(SMOKE.read_text())
  raw.pop('hparams')
  raw['settings'] = {'omniglot': 'task=omni,n_layer=1',
                     'linear_1_layer': 'task=sbn,n_layer=1,nonlinear=false'}
  raw['published'] = None
  path = tmp_path_factory.mktemp('config') / 'with_failures.json'
  path.write_text(json.dumps(raw))
  result = sweep_cli(path, w, smoke['data_dir'])
  return {'result': result, 'status': read_status(w), 'before': before,
          'unfinished': unfinished, 'smoke_runs': runs,
          'config': sweep.load_config(path)}


def test_second_sweep_skips_finished_runs_and_resumes_the_other(
    smoke, second_sweep):
  status, w = second_sweep['status'], smoke['w']
  unfinished = second_sweep['unfinished']
  for run in second_sweep['smoke_runs']:
    path = pathlib.Path(run.run_dir(str(w))) / 'metrics.jsonl'
    data, mtime = second_sweep['before'][run.name]
    if run.name == unfinished.name:
      continue
    assert status['runs'][run.name]['status'] == 'skipped'
    assert (path.read_bytes(), path.stat().st_mtime_ns) == (data, mtime)
  entry = status['runs'][unfinished.name]
  assert entry['status'] == 'finished', entry
  run_dir = pathlib.Path(unfinished.run_dir(str(w)))
  assert json.loads((run_dir / 'finished.json').read_text()) == {'step': 250}
  # Resumed from its checkpoint, not trained again: its training record is
  # the original line, byte for byte.
  old_train = [l for l in second_sweep['before'][unfinished.name][0]
               .decode().splitlines() if '"train"' in l]
  new_train = [l for l in (run_dir / 'metrics.jsonl').read_text()
               .splitlines() if '"train"' in l]
  assert new_train == old_train and len(old_train) == 1


def test_second_sweep_records_failures_and_carries_on(second_sweep):
  result, status = second_sweep['result'], second_sweep['status']
  assert result.returncode == 1
  assert 'failed' in result.stderr and sweep.STATUS_FILE in result.stderr
  failed = [r for r in sweep.expand_runs(second_sweep['config'])
            if r.setting == 'omniglot']
  assert len(failed) == 4
  for run in failed:
    entry = status['runs'][run.name]
    assert entry['status'] == 'failed'
    assert entry['returncode'] not in (0, None)
    # The log tail ends with rebar_train's one-line reason.
    assert any('omniglot' in line and 'error' in line
               for line in entry['log_tail']), entry['log_tail']
    assert len(entry['log_tail']) <= sweep.LOG_TAIL_LINES
    assert os.path.isfile(entry['log'])
  assert status['last_sweep']['counts'] == {'failed': 4, 'finished': 1,
                                            'skipped': 3}


def test_print_commands_into_a_reader_that_stops_early(tmp_path):
  """`--print_commands | head -1`: the closed pipe ends the listing quietly,
  with status 0 and no traceback."""
  lister = subprocess.Popen(
      [sys.executable, '-m', 'rebar.sweep',
       str(CONFIGS / 'generative_mnist.json'),
       '--working_dir=%s' % tmp_path, '--print_commands'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO))
  first = lister.stdout.readline()
  lister.stdout.close()  # as `head -1` does after its line
  _, stderr = lister.communicate(timeout=60)
  assert b'rebar_train.py' in first
  assert lister.returncode == 0, stderr
  assert b'Traceback' not in stderr and b'BrokenPipe' not in stderr
