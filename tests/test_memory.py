"""Memory estimate: sensible runs fit, absurd sizes are refused, one line."""

import ast
import glob
import itertools
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from rebar import memory
from rebar import sweep
from rebar.hparams import HParamsError, MODELS, parse_hparams

REPO = pathlib.Path(__file__).resolve().parents[1]
GB = 1e9
# A 24 GB machine with some of it in use.
MACHINE_24GB = 20 * GB

# Peak resident memory of rebar_train (/usr/bin/time -v, --threads=1,
# --eval_freq=0, at most 200 steps): the highest of the runs in the table of
# rebar/memory.py.
MEASURED_MB = {
    'model=SBN': 953,
    'model=SBN,n_hidden=2000': 987,
    'model=SBN,batch_size=1000': 852,
    'model=SBN,n_samples=1000': 857,
    'model=SBN,n_hidden=20000': 1514,
    'model=SBN,n_layer=20': 805,
    'model=SBN,n_layer=50': 1386,
    'model=SBN,n_layer=100': 1977,
    'model=SBN,n_layer=300': 4314,
    'model=SBNRebar,n_layer=6': 1327,
    'model=SBNDynamicRebar,n_layer=2': 1227,
    'model=SBNDynamicRebar,n_layer=4': 1194,
    'model=SBNDynamicRebar,n_layer=2,n_samples=200': 1876,
    'model=SBNTrackGradVariances': 1143,
    'model=SBNTrackGradVariances,n_layer=2': 1215,
    'model=SBNTrackGradVariances,n_hidden=10000': 1981,
}


def estimate(text, **overrides):
  return memory.estimate_step_bytes(parse_hparams(text, **overrides))


def test_the_configs_runs_fit_with_room_to_spare():
  paths = sorted(glob.glob(str(REPO / 'configs' / '**' / '*.json'),
                           recursive=True))
  n_runs = 0
  for path in paths:
    try:
      config = sweep.load_config(path)
    except sweep.ConfigError:
      continue  # published.json holds numbers, not runs
    if config.program != 'train':
      continue  # policy-gradient runs: no SBN memory model
    for run in sweep.expand_runs(config):
      memory.check_fits(parse_hparams(run.hparams), available=4 * GB)
      n_runs += 1
  assert n_runs > 100


def fewest_samples(model):
  """The least n_samples the model takes (SBNReinforceLOO leaves one of
  each example's samples out)."""
  return 2 if model == 'SBNReinforceLOO' else 1


@pytest.mark.parametrize('model', MODELS)
def test_published_sizes_fit(model):
  # n_hidden 200 and batch 24 (the defaults), up to four nonlinear layers
  # and ten samples.
  for n_layer, nonlinear, n_samples in itertools.product(
      (1, 2, 4), (False, True), (1, 10)):
    hparams = parse_hparams(model=model, n_layer=n_layer, nonlinear=nonlinear,
                            n_samples=max(n_samples, fewest_samples(model)),
                            track_relax=True)
    memory.check_fits(hparams, available=8 * GB)


@pytest.mark.parametrize('model', MODELS)
@pytest.mark.parametrize('size', ['n_hidden=2000', 'batch_size=1000'])
def test_moderately_large_runs_fit_a_24gb_machine(model, size):
  for n_layer, nonlinear in itertools.product((1, 2), (False, True)):
    hparams = parse_hparams(size, model=model, n_layer=n_layer,
                            nonlinear=nonlinear,
                            n_samples=fewest_samples(model))
    memory.check_fits(hparams, available=MACHINE_24GB)


@pytest.mark.parametrize('text,named', [
    ('n_hidden=1000000', 'reduce n_hidden (now 1000000)'),
    ('n_samples=100000', 'reduce n_samples (now 100000)'),
    ('n_layer=1000', 'reduce n_layer (now 1000)'),
    ('model=SBNDynamicRebar,n_layer=1000', 'reduce n_layer (now 1000)'),
    ('model=SBN,batch_size=2000000', 'reduce batch_size (now 2000000)'),
])
def test_absurd_sizes_are_refused_naming_the_size(text, named):
  with pytest.raises(HParamsError) as info:
    memory.check_fits(parse_hparams(text), available=MACHINE_24GB)
  message = str(info.value)
  assert '\n' not in message
  assert 'this machine has 20.0 GB available' in message
  assert message.endswith(named)  # and no size that would not help
  need = float(message.split('needs about ')[1].split(' GB')[0])
  assert need * GB > MACHINE_24GB


def test_every_size_that_helps_is_named():
  with pytest.raises(HParamsError) as info:
    memory.check_fits(parse_hparams('n_samples=1000,batch_size=2400'),
                      available=MACHINE_24GB)
  assert str(info.value).endswith(
      'reduce n_samples (now 1000) or batch_size (now 2400)')


def test_a_machine_too_small_for_any_run_says_so():
  with pytest.raises(HParamsError) as info:
    memory.check_fits(parse_hparams(''), available=100 * 2 ** 20)
  assert 'free memory on this machine or use a larger one' in str(info.value)


def test_check_fits_returns_the_estimate_and_skips_unknown_memory(
    monkeypatch):
  hparams = parse_hparams('n_hidden=1000000')
  monkeypatch.setattr(memory, 'available_bytes', lambda: None)
  assert memory.check_fits(hparams) == memory.estimate_step_bytes(hparams)
  monkeypatch.setattr(memory, 'available_bytes', lambda: 2 * GB)
  with pytest.raises(HParamsError):
    memory.check_fits(hparams)


@pytest.mark.parametrize('model', [m for m in MODELS
                                   if not m.startswith('Categorical')])
def test_the_estimate_grows_with_each_size(model):
  base = dict(model=model, track_relax=True, relax_cv='relax',
              n_samples=fewest_samples(model))
  sizes = dict(n_hidden=400, n_layer=2, n_samples=20, batch_size=48)
  reference = estimate('', **base)
  for name, value in sizes.items():
    assert estimate('', **dict(base, **{name: value})) > reference, name
  assert estimate('', nonlinear=True, **base) > reference
  assert estimate('task=omni,dynamic_b=true', **base) > estimate(
      'task=omni', **base)


def test_categorical_vae_estimate_grows_with_its_sizes_and_evaluations():
  base = dict(model='CategoricalVAE', estimator='ars')
  reference = estimate('', **base)
  for name, value in dict(n_latent=40, n_categories=20, batch_size=400,
                          n_samples=2).items():
    assert estimate('', **dict(base, **{name: value})) > reference, name
  # ARSM evaluates up to one pseudo-action per pair of classes.
  assert estimate('', **dict(base, estimator='arsm')) > reference
  # The SBN's sizes are not the VAE's.
  assert estimate('', **dict(base, n_hidden=400)) == reference


def test_rebar_types_cost_more_than_reinforce():
  for n_layer in (1, 2, 4):
    sbn = estimate('model=SBN', n_layer=n_layer)
    rebar = estimate('model=SBNRebar', n_layer=n_layer)
    dynamic = estimate('model=SBNDynamicRebar', n_layer=n_layer)
    track = estimate('model=SBNTrackGradVariances', n_layer=n_layer)
    assert sbn < rebar < dynamic < track


@pytest.mark.parametrize('text', sorted(MEASURED_MB))
def test_estimate_is_on_the_high_side_of_measured_peaks(text):
  # Never below a measured peak (so it never refuses what ran), and within
  # 2.5x of it (so it stays an estimate). Measurements without evaluation:
  # its share is left out.
  parts = memory.estimate_breakdown(parse_hparams(text))
  del parts['evaluation']
  estimated_mb = sum(parts.values()) / 2 ** 20
  assert MEASURED_MB[text] <= estimated_mb <= 2.5 * MEASURED_MB[text]


@pytest.mark.parametrize('text', [
    'model=SBN',
    'model=SBNTrackGradVariances,n_layer=2,nonlinear=true,track_relax=true',
    'model=SBNTrackGradVariances,task=sp,track_relax=true,relax_cv=rebar',
    'model=SBNRelax,n_layer=2,task=sp',
    'model=SBNRelax,relax_cv=free,relax_depth=3',
    'model=SBNRebarPerLayer,n_layer=3,task=sp,sp_multilayer=true',
    'model=SBNMuProp,n_layer=3',
    'model=SBNSimpleMuProp',
    'model=SBNNVIL,task=omni',
    'model=SBNDynamicRebar,nonlinear=true,task=sp',
    'model=SBNRebar,n_layer=2,quadratic=false',
    'model=SBNGumbel',
])
def test_parameter_counts_are_the_models(text):
  pytest.importorskip('tensorflow')
  from rebar import models  # pylint: disable=g-import-not-at-top
  hparams = parse_hparams(text, n_hidden=5, n_input=8)
  model = models.build_model(hparams, np.full(8, 0.5, np.float32), 0)
  assert memory.parameter_counts(hparams) == (
      _size(model.model_variables), _size(model.aux_variables))


def _size(variables):
  return sum(int(np.prod(v.shape)) for v in variables)


def _module_constant(path, name):
  """A module-level constant read from source, without importing it."""
  tree = ast.parse((REPO / path).read_text())
  for node in tree.body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
        getattr(node.targets[0], 'id', None) == name):
      return ast.literal_eval(node.value)
  raise AssertionError('%s has no constant %s' % (path, name))


def test_copied_constants_match_their_sources():
  assert memory.EVAL_ROWS_PER_CALL == _module_constant(
      'rebar/evaluation.py', 'EVAL_ROWS_PER_CALL')
  assert memory.BASELINE_HIDDEN == _module_constant(
      'rebar/estimator_modules.py', 'BASELINE_HIDDEN')
  assert memory.RELAX_HIDDEN == _module_constant(
      'rebar/rebar_modules.py', 'RELAX_HIDDEN')


def test_importing_it_imports_no_tensorflow():
  code = ('import sys, rebar.memory; '
          'sys.exit("tensorflow" in sys.modules)')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


def test_available_bytes_reads_meminfo_and_cgroup_limits(tmp_path):
  meminfo = str(tmp_path / 'meminfo')
  _write(meminfo, 'MemTotal:  32000000 kB\nMemFree:  1000 kB\n'
         'MemAvailable:   16000000 kB\n')
  no_cgroup = str(tmp_path / 'none')
  assert memory.available_bytes(meminfo, no_cgroup) == 16000000 * 1024
  # cgroup v1 without a limit reads as about 2^63: ignored.
  v1 = str(tmp_path / 'v1')
  _write(os.path.join(v1, 'memory', 'memory.limit_in_bytes'),
         '9223372036854771712\n')
  assert memory.available_bytes(meminfo, v1) == 16000000 * 1024
  _write(os.path.join(v1, 'memory', 'memory.limit_in_bytes'), '%d\n' % 8e9)
  _write(os.path.join(v1, 'memory', 'memory.usage_in_bytes'), '%d\n' % 3e9)
  assert memory.available_bytes(meminfo, v1) == 5e9
  v2 = str(tmp_path / 'v2')
  _write(os.path.join(v2, 'memory.max'), 'max\n')
  assert memory.available_bytes(meminfo, v2) == 16000000 * 1024
  _write(os.path.join(v2, 'memory.max'), '%d\n' % 4e9)
  _write(os.path.join(v2, 'memory.current'), '%d\n' % 1e9)
  assert memory.available_bytes(meminfo, v2) == 3e9


def test_available_bytes_falls_back_to_physical_memory(tmp_path):
  meminfo = str(tmp_path / 'meminfo')
  _write(meminfo, 'MemTotal:  32000000 kB\n')
  physical = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  assert memory.available_bytes(meminfo, str(tmp_path)) == physical
  assert memory.available_bytes(str(tmp_path / 'absent'),
                                str(tmp_path)) == physical


def test_available_bytes_on_this_machine_is_plausible():
  available = memory.available_bytes()
  assert available is not None and 2 ** 27 < available < 2 ** 50
