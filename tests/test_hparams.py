"""Hparams: defaults, parsing with the default's type, errors, run names."""

import pytest

from rebar.hparams import HParamsError, MODELS, TASKS, parse_hparams


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
