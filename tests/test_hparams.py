"""Hparams: defaults, parsing with the default's type, errors, run names."""

import dataclasses
import itertools
import re

import pytest

from rebar import data
from rebar.hparams import (EXTENSIONS, HParams, HParamsError, MODELS, TASKS,
                           TASK_N_INPUT, parse_hparams)

# Hparams the README suggests whose original run names exceed 255 bytes.
README_LONG_NAMES = (
    'task=sp,sp_multilayer=true,quadratic_fix=true,n_layer=2,'
    'model=SBNDynamicRebar',
    'model=SBNTrackGradVariances,track_relax=true,quadratic_fix=true')
FLOAT_FIELDS = [f.name for f in dataclasses.fields(HParams)
                if isinstance(f.default, float)]


def test_defaults_are_the_originals():
  values = parse_hparams('').values()
  expected = dict(model='SBNGumbel', n_hidden=200, n_input=784, n_layer=1,
                  nonlinear=False, learning_rate=0.001, temperature=0.5,
                  n_samples=1, batch_size=24, trial=1, muprop_relaxation=True,
                  dynamic_b=False, quadratic=True, beta2=0.99999, task='sbn')
  for name, value in expected.items():
    assert values[name] == value and type(values[name]) is type(value), name
  # Additions keep the original's behaviour by default.
  assert values['sp_multilayer'] is False
  assert values['quadratic_fix'] is False


def test_parsing_uses_the_defaults_types():
  h = parse_hparams('model=SBNRebar, n_layer=2,nonlinear=true,'
                    'learning_rate=3e-4,temperature=1,quadratic=False')
  assert h.model == 'SBNRebar'
  assert h.n_layer == 2 and isinstance(h.n_layer, int)
  assert h.nonlinear is True and h.quadratic is False
  assert h.learning_rate == pytest.approx(3e-4)
  assert isinstance(h.temperature, float) and h.temperature == 1.0


def test_run_name_is_sorted_name_value_pairs():
  h = parse_hparams('model=SBNDynamicRebar,learning_rate=0.0003,n_layer=2')
  name = h.run_name()
  assert name == ('batch_size_24.beta2_0.99999.dynamic_b_False.'
                  'learning_rate_0.0003.model_SBNDynamicRebar.'
                  'muprop_relaxation_True.n_hidden_200.n_input_784.n_layer_2.'
                  'n_samples_1.nonlinear_False.quadratic_True.task_sbn.'
                  'temperature_0.5.trial_1')
  # A new trial is a separate run; a correction hparam shows when set.
  assert parse_hparams('trial=2').run_name() != parse_hparams('').run_name()
  assert 'quadratic_fix_True' in parse_hparams('quadratic_fix=true').run_name()


@pytest.mark.parametrize('text,fragment', [
    ('n_hiden=3', 'unknown hparam'),
    ('n_layer=two', 'takes an int'),
    ('learning_rate=fast', 'takes a float'),
    ('nonlinear=yes', 'takes true or false'),
    ('model=SBNFoo', 'unknown model'),
    ('task=cifar', 'unknown task'),
    ('n_hidden=0', 'n_hidden must be positive'),
    ('n_layer=-1', 'n_layer must be positive'),
    ('batch_size=0', 'batch_size must be positive'),
    ('n_samples=0', 'n_samples must be positive'),
    ('learning_rate=0', 'learning_rate must be positive'),
    ('temperature=-0.5', 'temperature must be positive'),
    ('batch_size=1', 'batch_size * n_samples must be at least 2'),
    ('beta2=1.0', 'beta2 must be in'),
    ('n_layer', 'not of the form name=value'),
    ('learning_rate=inf', 'learning_rate must be a finite number, got inf'),
    ('temperature=nan', 'temperature must be a finite number, got nan'),
    ('beta2=-inf', 'beta2 must be a finite number'),
    ('n_layer=1,n_layer=2', 'hparam n_layer is given twice'),
    ('n_input=392', 'n_input must be 784 for task sbn'),
    ('task=sp,n_input=392', 'n_input must be 784 for task sp'),
    ('task=omni,n_input=1000', 'n_input must be 784 for task omni'),
])
def test_errors_are_one_clear_line(text, fragment):
  with pytest.raises(HParamsError) as info:
    parse_hparams(text)
  message = str(info.value)
  assert fragment in message
  assert '\n' not in message


def test_error_lists_the_choices():
  with pytest.raises(HParamsError) as info:
    parse_hparams('model=Rebar')
  assert all(m in str(info.value) for m in MODELS)
  with pytest.raises(HParamsError) as info:
    parse_hparams('task=mnist')
  assert all(t in str(info.value) for t in TASKS)
  with pytest.raises(HParamsError) as info:
    parse_hparams('lr=0.1')
  assert 'learning_rate' in str(info.value)


def test_batch_of_one_with_two_samples_is_allowed():
  assert parse_hparams('batch_size=1,n_samples=2').n_samples == 2


@pytest.mark.parametrize('name', FLOAT_FIELDS)
@pytest.mark.parametrize('value', ['nan', 'inf', '-inf'])
def test_every_float_hparam_must_be_finite(name, value):
  # Every float field, not a list, so that a float hparam added later is
  # covered too.
  with pytest.raises(HParamsError) as info:
    parse_hparams('%s=%s' % (name, value))
  assert str(info.value).startswith('%s must be a finite number' % name)
  with pytest.raises(HParamsError):
    parse_hparams('', **{name: float(value)})


def test_float_fields_include_the_relax_ones():
  assert {'learning_rate', 'temperature', 'beta2', 'relax_weight_decay',
          'var_lr_scale'} <= set(FLOAT_FIELDS)


def test_duplicate_names_the_values_given():
  with pytest.raises(HParamsError) as info:
    parse_hparams('model=SBN, n_layer=1,n_layer = 2')
  assert 'n_layer=1 and n_layer=2' in str(info.value)
  # The same value twice is as much a mistake (which line to edit?).
  with pytest.raises(HParamsError):
    parse_hparams('trial=2,trial=2')


def test_an_override_replaces_the_strings_value():
  assert parse_hparams('n_layer=1', n_layer=2).n_layer == 2


def test_n_input_is_the_datas_image_size():
  assert set(TASK_N_INPUT) == set(TASKS)
  assert set(TASK_N_INPUT.values()) == {data.N_PIXELS}
  for task in TASKS:
    assert parse_hparams('task=%s,n_input=784' % task).n_input == 784
  assert parse_hparams('').n_input == 784
  # The tests' tiny models set n_input directly, without data.
  assert parse_hparams('task=sp', n_input=8).n_input == 8
  with pytest.raises(HParamsError):
    HParams(n_input=8).validate()
  assert HParams(n_input=8).validate(check_data_sizes=False).n_input == 8


def original_run_name(h):
  """The run-name rule before shortening, written out independently."""
  values = dataclasses.asdict(h)
  defaults = dataclasses.asdict(HParams())
  pairs = ['%s_%s' % (k, values[k]) for k in sorted(values)
           if k not in EXTENSIONS or values[k] != defaults[k]]
  return '.'.join(pairs)


def test_default_run_names_are_the_originals():
  assert parse_hparams('').run_name() == (
      'batch_size_24.beta2_0.99999.dynamic_b_False.learning_rate_0.001.'
      'model_SBNGumbel.muprop_relaxation_True.n_hidden_200.n_input_784.'
      'n_layer_1.n_samples_1.nonlinear_False.quadratic_True.task_sbn.'
      'temperature_0.5.trial_1')
  assert parse_hparams('model=SBNRebar,task=sp,n_layer=2,nonlinear=true,'
                       'learning_rate=0.0003,trial=3').run_name() == (
      'batch_size_24.beta2_0.99999.dynamic_b_False.learning_rate_0.0003.'
      'model_SBNRebar.muprop_relaxation_True.n_hidden_200.n_input_784.'
      'n_layer_2.n_samples_1.nonlinear_True.quadratic_True.task_sp.'
      'temperature_0.5.trial_3')


@pytest.mark.parametrize('text', README_LONG_NAMES)
def test_readme_settings_get_a_short_readable_name(text):
  h = parse_hparams(text)
  assert len(original_run_name(h).encode('utf-8')) > 255  # why it matters
  name = h.run_name()
  assert len(name.encode('utf-8')) <= 255
  assert name.startswith('model_%s.' % h.model)
  assert re.fullmatch(r'.*\.hash_[0-9a-f]{12}', name)
  for item in text.split(','):
    key = item.split('=')[0]
    if key != 'model':  # every hparam the user set shows
      assert '%s_%s' % (key, getattr(h, key)) in name.split('.')
  assert h.run_name() == name  # deterministic


def test_run_names_are_unique_and_unchanged_where_they_fit():
  names = {}
  grid = itertools.product(MODELS, TASKS, (1, 2), (False, True),
                           (False, True), ('rebar', 'relax'), (1, 2))
  for model, task, n_layer, fix, track, cv, trial in grid:
    if model.startswith('Categorical') and task != 'sbn':
      continue  # it models MNIST only
    # SBNReinforceLOO leaves one of each example's samples out: two at least.
    h = parse_hparams(model=model, task=task, n_layer=n_layer,
                      quadratic_fix=fix, track_relax=track, relax_cv=cv,
                      trial=trial,
                      n_samples=2 if model == 'SBNReinforceLOO' else 1)
    name = h.run_name()
    assert len(name.encode('utf-8')) <= 255
    original = original_run_name(h)
    if len(original.encode('utf-8')) <= 255:
      assert name == original
    assert name not in names, (h, names.get(name))
    names[name] = h
  # The grid reaches both rules.
  assert any('hash_' in n for n in names)
  assert any('hash_' not in n for n in names)


def test_names_cut_to_the_same_text_differ_by_their_hash():
  long_values = dict(model='SBNTrackGradVariances', learning_rate=1.2345e-4,
                     temperature=0.123456789, beta2=0.987654321, n_hidden=123,
                     n_layer=3, n_samples=7, batch_size=33, nonlinear=True,
                     quadratic_fix=True, relax_cv='free', relax_depth=3,
                     relax_weight_decay=0.000123456, track_relax=True,
                     muprop_relaxation=False, quadratic=False)
  first = parse_hparams('', var_lr_scale=3.5, **long_values).run_name()
  second = parse_hparams('', var_lr_scale=4.5, **long_values).run_name()
  assert first != second
  head = lambda name: name.rsplit('.hash_', 1)[0]  # noqa: E731
  assert head(first) == head(second)  # var_lr_scale, sorted last, is cut
  assert len(first.encode('utf-8')) <= 255


def test_shortening_never_splits_a_character():
  # Only reachable without validation, but the rule must hold for any value.
  name = parse_hparams('', validate=False, task='é' * 200).run_name()
  assert len(name.encode('utf-8')) <= 255
  name.encode('utf-8').decode('utf-8')
  assert name.startswith('model_SBNGumbel.task_éé')


def test_shortened_names_never_equal_full_ones():
  long_name = parse_hparams(README_LONG_NAMES[0]).run_name()
  assert long_name.startswith('model_')
  assert parse_hparams('').run_name().startswith('batch_size_')
