"""Estimator costs from the benchmark, and variance per unit of work, in the
train records, TensorBoard, the report and its figure."""

import json
import math
import os

import numpy as np
import pytest

from rebar import costs
from rebar import report
from rebar import report_figures
from rebar import report_work
from rebar import sweep
from rebar.hparams import parse_hparams
from tests.test_sweep import train as train_record
from tests.test_sweep import write_config
from tests.test_sweep import write_run


def table_of(ms_by_key, source='test'):
  """A CostTable of cells 'Model/column' -> ms (CategoricalVAE:
  'CategoricalVAE/<estimator>'), with the benchmark's --hparams of each
  cell."""
  return costs.CostTable(
      {key: {'median_ms': ms,
             'hparams': costs.cell_hparams(*key.split('/'))}
       for key, ms in ms_by_key.items()}, source)


def test_a_cell_applies_only_to_runs_of_its_shape():
  table = table_of({'SBNARM/linear1': 0.8, 'SBNARM/nonlinear1': 1.5,
                    'SBNReinforceLOO/linear1': 0.9})
  arm = parse_hparams('model=SBNARM,learning_rate=0.001,trial=3').values()
  assert table.ms_per_step(arm) == (0.8, 'SBNARM/linear1')
  nonlinear = parse_hparams('model=SBNARM,nonlinear=true').values()
  assert table.ms_per_step(nonlinear) == (1.5, 'SBNARM/nonlinear1')
  # Another batch size, another number of samples: no cell, no cost.
  for text in ('model=SBNARM,batch_size=48', 'model=SBNARM,n_hidden=500',
               'model=SBNARM,n_layer=2', 'model=SBNDisARM'):
    assert table.ms_per_step(parse_hparams(text).values()) == (None, None)
  loo = 'model=SBNReinforceLOO,n_samples=%d'
  assert table.ms_per_step(parse_hparams(loo % 2).values())[0] == 0.9
  assert table.ms_per_step(parse_hparams(loo % 3).values())[0] is None


def test_relax_network_sizes_matter_only_to_models_that_run_relax():
  table = table_of({'SBNNVIL/linear1': 0.7, 'SBNRelax/linear1': 2.5})
  nvil = parse_hparams('model=SBNNVIL,relax_depth=4').values()
  assert table.ms_per_step(nvil)[0] == 0.7
  relax = parse_hparams(costs.cell_hparams('SBNRelax', 'linear1')).values()
  assert table.ms_per_step(relax)[0] == 2.5
  relax['relax_depth'] = 2
  assert table.ms_per_step(relax)[0] is None


def test_categorical_cells_are_per_estimator():
  table = table_of({'CategoricalVAE/arsm': 40.0,
                    'CategoricalVAE/reinforce_loo': 3.0})
  arsm = parse_hparams('model=CategoricalVAE,estimator=arsm').values()
  assert table.ms_per_step(arsm) == (40.0, 'CategoricalVAE/arsm')
  other = parse_hparams('model=CategoricalVAE,estimator=arsm,'
                        'n_categories=5').values()
  assert table.ms_per_step(other) == (None, None)
  tracker = parse_hparams('model=CategoricalTrackGradVariances').values()
  fields = table.record_fields(tracker, {'arsm': -9.0, 'reinforce_loo': -8.0,
                                         'rebar': -9.5})
  # The tracker's LOO runs 2 samples, as its cell does.
  assert fields['ms_per_step'] == {'arsm': 40.0, 'reinforce_loo': 3.0}


def test_cells_without_recorded_hparams_are_read_as_the_benchmark_ran_them():
  table = costs.CostTable({'SBNRebar/linear2': {'median_ms': 2.0},
                           'SBNGone/linear1': {'median_ms': 1.0}}, 'old')
  rebar2 = parse_hparams('model=SBNRebar,n_layer=2').values()
  assert table.ms_per_step(rebar2) == (2.0, 'SBNRebar/linear2')


def test_record_fields_of_one_estimator_and_of_the_tracker():
  table = table_of({'SBNARM/linear1': 0.5, 'SBNNVIL/linear1': 0.25,
                    'SBNDisARM/linear1': 1.0})
  arm = parse_hparams('model=SBNARM').values()
  fields = table.record_fields(arm, -3.0)
  assert fields == {'ms_per_step': 0.5,
                    'log_variance_x_ms': pytest.approx(-3.0 + math.log(0.5)),
                    'cost_cells': 'SBNARM/linear1', 'cost_source': 'test'}
  tracker = parse_hparams('model=SBNTrackGradVariances,'
                          'track_extra=arm+disarm').values()
  fields = table.record_fields(tracker, {'NVIL': 1.0, 'ARM': -2.0,
                                         'REBAR': -4.0, 'DisARM': -3.0})
  # REBAR has no cell here: left out, not given a wrong cost.
  assert fields['ms_per_step'] == {'NVIL': 0.25, 'ARM': 0.5, 'DisARM': 1.0}
  assert fields['log_variance_x_ms'] == pytest.approx(
      {'NVIL': 1.0 + math.log(0.25), 'ARM': -2.0 + math.log(0.5),
       'DisARM': -3.0})
  assert table.record_fields(parse_hparams('model=SBN').values(), -1.0) == {}


@pytest.mark.parametrize('content, fragment', [
    (None, 'cannot read'),
    ('{not json', 'not a results file'),
    ('{"cells": []}', 'not a results file'),
    ('{"quick": true, "cells": {}}', 'a --quick benchmark'),
])
def test_unusable_results_files_say_what_to_do(tmp_path, content, fragment):
  path = tmp_path / 'results.json'
  if content is not None:
    path.write_text(content)
  with pytest.raises(costs.CostError, match=fragment):
    costs.load_table(path)


def test_the_committed_benchmark_costs_every_tracked_estimator():
  """bench/results.json has a cell for the model of every estimator that
  SBNTrackGradVariances follows, in every column, recorded with the
  --hparams that rebar.costs matches runs against."""
  table = costs.load_table()
  for fragment in costs.ESTIMATOR_MODELS.values():
    if 'Categorical' in fragment:
      continue
    model = fragment.split('=')[1]
    for column in costs.COLUMNS:
      values = parse_hparams(costs.cell_hparams(model, column)).values()
      ms, key = table.ms_per_step(values)
      assert key == '%s/%s' % (model, column) and ms > 0
  with open(costs.DEFAULT_TABLE) as f:
    cells = json.load(f)['cells']
  assert cells['SBNRelax/linear1']['hparams'] == costs.cell_hparams(
      'SBNRelax', 'linear1')
  for name in costs.CATEGORICAL_CELLS:
    values = parse_hparams(costs.cell_hparams('CategoricalVAE',
                                              name)).values()
    assert table.ms_per_step(values)[1] == 'CategoricalVAE/' + name


def test_train_records_and_tensorboard_carry_the_costs(tmp_path):
  """A tracker run with a cost table records each estimator's ms per step
  and log(variance × ms) = log variance + log ms; TensorBoard gets the
  latter."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from rebar import models  # pylint: disable=g-import-not-at-top
  from rebar import train as training  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  data = (rng.rand(100, 784) < 0.3).astype(np.float32)
  hparams = parse_hparams('model=SBNTrackGradVariances,track_extra=arm')
  model = models.build_model(hparams, data.mean(axis=0), 0)
  table = table_of({'SBNARM/linear1': 0.5, 'SBNRebar/linear1': 2.0})
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  training.train(model, training.Trainer(model, data), data[:7], data[:7],
                 str(run_dir), seed=1, max_steps=5, eval_freq=0,
                 out=lambda line: None, tensorboard_dir=str(tmp_path / 'tb'),
                 cost_table=table)
  (record,) = [json.loads(line) for line in open(run_dir / 'metrics.jsonl')]
  assert record['ms_per_step'] == {'ARM': 0.5, 'REBAR': 2.0}
  for name, ms in record['ms_per_step'].items():
    assert record['log_variance_x_ms'][name] == pytest.approx(
        record['log_variance'][name] + math.log(ms))
  assert record['cost_cells'] == {'ARM': 'SBNARM/linear1',
                                  'REBAR': 'SBNRebar/linear1'}
  tags = {v.tag for name in os.listdir(tmp_path / 'tb')
          for event in tf.compat.v1.train.summary_iterator(
              str(tmp_path / 'tb' / name)) for v in event.summary.value}
  assert {'log variance x ms/ARM', 'log variance x ms/REBAR'} <= tags
  assert 'log variance x ms/NVIL' not in tags


@pytest.fixture
def two_estimators(tmp_path):
  """ARM at log variance -2 and -4 (mean -3) costing 0.5 ms; REBAR at -5
  costing 4 ms; SBN with no cell."""
  config = sweep.load_config(write_config(
      tmp_path / 'c.json', models=['SBNARM', 'SBNRebar', 'SBN'],
      learning_rates=[0.0003], trials=1))
  w = tmp_path / 'w'
  for model, lvs in (('SBNARM', (-2.0, -4.0)), ('SBNRebar', (-5.0, -5.0)),
                     ('SBN', (1.0, 1.0))):
    write_run(w, config, 'linear_1_layer', model, 0.0003, 1,
              [train_record(10 * (i + 1), -120.0, lv)
               for i, lv in enumerate(lvs)])
  table = table_of({'SBNARM/linear1': 0.5, 'SBNRebar/linear1': 4.0})
  return config, w, table


def test_work_table_and_figure_from_runs_and_costs(two_estimators, tmp_path):
  config, w, table = two_estimators
  groups = report.aggregate(config, report.collect(config, str(w)))
  chosen = report.select(config, groups)
  rows = {r['estimator']: r for r in report_work.work_rows(
      config, groups, chosen, table)}
  arm, rebar_, sbn = rows['SBNARM'], rows['SBNRebar'], rows['SBN']
  assert arm['mean_log_variance'] == -3.0 and arm['ms_per_step'] == 0.5
  assert rebar_['log_variance_x_ms'] == pytest.approx(-5 + math.log(4))
  # REBAR has the smaller variance, ARM the smaller variance x ms.
  assert rebar_['variance_relative'] == 1.0
  assert arm['variance_relative'] == pytest.approx(math.exp(2))
  assert arm['work_relative'] == 1.0
  assert rebar_['work_relative'] == pytest.approx(
      math.exp(-5 + math.log(4) - (-3 + math.log(0.5))))
  assert sbn['ms_per_step'] is None and sbn['work_relative'] is None
  series = report_figures.figure_series(config, groups, chosen,
                                        'linear_1_layer', table)
  work = {label: values for panel, label, _, values in series
          if panel == 'work'}
  assert list(work) == ['SBNARM, lr 0.0003', 'SBNRebar, lr 0.0003']
  assert work['SBNARM, lr 0.0003'] == pytest.approx(
      [-2 + math.log(0.5), -4 + math.log(0.5)])

  report.make_report(config, str(w), str(tmp_path / 'out'), figures=False,
                     cost_table=table)
  text = (tmp_path / 'out' / 'report.md').read_text()
  assert ('| linear_1_layer | SBNARM | SBNARM | 2 | -3.000 | 0.50 | %.3f | '
          '%.2f | 1.00 |' % (-3 + math.log(0.5), math.exp(2))) in text
  assert '| linear_1_layer | SBN | SBN | 2 | 1.000 | — | — |' in text


def test_report_without_costs_says_why(two_estimators, tmp_path, capsys):
  config, w, _ = two_estimators
  assert report.main([str(config.path), '--working_dir', str(w), '--out',
                      str(tmp_path / 'out'), '--no_figures',
                      '--cost_table=none']) == 0
  text = (tmp_path / 'out' / 'report.md').read_text()
  assert 'No costs: --cost_table=none.' in text
  assert report.main([str(config.path), '--working_dir', str(w), '--out',
                      str(tmp_path / 'out'), '--no_figures',
                      '--cost_table', str(tmp_path / 'missing.json')]) == 2
  assert 'cannot read the benchmark results' in capsys.readouterr().err
