"""Hyperparameters: defaults of reference section 1, parsed from `name=value,...`.

The string form is the original's: comma-separated `name=value` pairs, each
value parsed with the type of its default (`true`/`false` for bools).
"""

import dataclasses

MODELS = ('SBN', 'SBNNVIL', 'SBNMuProp', 'SBNSimpleMuProp', 'SBNRebar',
          'SBNDynamicRebar', 'SBNGumbel', 'SBNTrackGradVariances', 'SBNRelax',
          'SBNRebarPerLayer')
RELAX_CONTROL_VARIATES = ('rebar', 'relax', 'free')
TASKS = ('sbn', 'sp', 'omni')
# Hparams that the original did not have.
EXTENSIONS = ('sp_multilayer', 'quadratic_fix', 'relax_cv', 'relax_depth',
              'relax_weight_decay', 'var_lr_scale', 'track_relax')


class HParamsError(ValueError):
  """A user-supplied hparams string that cannot be used (one-line message)."""


@dataclasses.dataclass
class HParams:
  """Every hyperparameter of the original, with its default (reference 1).

  Two additions correct behaviour of the original; their defaults keep the
  original's (published) behaviour:
    sp_multilayer: task `sp` only. False (original, see its errata): the
      generative side has a single stochastic layer whatever `n_layer`.
      True: the generative side has `n_layer` stochastic layers as for `sbn`.
    quadratic_fix: REBAR's per-layer control variate (`quadratic=true`) as in
      the original (False, biased for n_layer >= 2) or the unbiased form.
  RELAX (Grathwohl et al. 2018; models SBNRelax and SBNRebarPerLayer):
    relax_cv: the control variate c: `rebar` f(σ_λ(z)), `relax`
      f(σ_λ(z)) + r_ρ(z), `free` r_ρ(z). SBNRebarPerLayer forces `rebar`.
    relax_depth: ReLU layers (200 units) of r_ρ.
    relax_weight_decay: L2 weight decay on ρ in the variance objective.
    var_lr_scale: learning-rate multiple of the variance-objective Adam.
    track_relax: add RELAX to SBNTrackGradVariances' comparison.
  """
  model: str = 'SBNGumbel'
  n_hidden: int = 200
  n_input: int = 784
  n_layer: int = 1
  nonlinear: bool = False
  learning_rate: float = 0.001
  temperature: float = 0.5
  n_samples: int = 1
  batch_size: int = 24
  trial: int = 1
  muprop_relaxation: bool = True
  dynamic_b: bool = False
  quadratic: bool = True
  beta2: float = 0.99999
  task: str = 'sbn'
  sp_multilayer: bool = False
  quadratic_fix: bool = False
  relax_cv: str = 'relax'
  relax_depth: int = 2
  relax_weight_decay: float = 0.001
  var_lr_scale: float = 10.0
  track_relax: bool = False

  def values(self):
    """All hyperparameters as a dict name -> value."""
    return dataclasses.asdict(self)

  def run_name(self):
    """Run-directory name: sorted `name_value` pairs joined by `.` (ref. 7).

    Values are written as Python's str() writes them, as the original did.
    Hparams this project added appear only when set away from their default,
    so a run of the original's hparams gets the original's directory name.
    """
    values = self.values()
    for name in EXTENSIONS:
      if values[name] == _FIELDS[name].default:
        del values[name]
    return '.'.join('%s_%s' % (k, v) for k, v in sorted(values.items()))

  def validate(self):
    """Raises HParamsError for values that cannot work."""
    if self.model not in MODELS:
      raise HParamsError('unknown model %r; choose one of: %s'
                         % (self.model, ', '.join(MODELS)))
    if self.task not in TASKS:
      raise HParamsError('unknown task %r; choose one of: %s'
                         % (self.task, ', '.join(TASKS)))
    for name in ('n_hidden', 'n_input', 'n_layer', 'n_samples', 'batch_size'):
      if getattr(self, name) <= 0:
        raise HParamsError('%s must be positive, got %d'
                           % (name, getattr(self, name)))
    for name in ('learning_rate', 'temperature'):
      if not getattr(self, name) > 0:
        raise HParamsError('%s must be positive, got %g'
                           % (name, getattr(self, name)))
    if self.relax_cv not in RELAX_CONTROL_VARIATES:
      raise HParamsError('unknown relax_cv %r; choose one of: %s'
                         % (self.relax_cv, ', '.join(RELAX_CONTROL_VARIATES)))
    if self.relax_depth <= 0:
      raise HParamsError('relax_depth must be positive, got %d'
                         % self.relax_depth)
    if self.relax_weight_decay < 0 or not self.var_lr_scale > 0:
      raise HParamsError('relax_weight_decay must be >= 0 and var_lr_scale '
                         '> 0, got %g and %g'
                         % (self.relax_weight_decay, self.var_lr_scale))
    if not 0 <= self.beta2 < 1:
      raise HParamsError('beta2 must be in [0, 1), got %g' % self.beta2)
    if self.batch_size * self.n_samples < 2:
      raise HParamsError(
          'batch_size * n_samples must be at least 2 (leave-one-out centering '
          'needs two rows), got %d * %d' % (self.batch_size, self.n_samples))
    if self.task == 'sp' and self.n_input % 2:
      raise HParamsError('task sp splits images into halves: n_input must be '
                         'even, got %d' % self.n_input)
    if self.dynamic_b and self.task == 'sp':
      raise HParamsError('dynamic_b is supported for task=sbn and task=omni '
                         'only (the original binarized MNIST for sbn only)')
    return self


_FIELDS = {f.name: f for f in dataclasses.fields(HParams)}


def _parse_value(name, text):
  kind = type(_FIELDS[name].default)
  if kind is bool:
    if text.lower() in ('true', '1'):
      return True
    if text.lower() in ('false', '0'):
      return False
    raise HParamsError('hparam %s takes true or false, got %r' % (name, text))
  try:
    return kind(text)
  except ValueError:
    raise HParamsError('hparam %s takes a%s %s, got %r'
                       % (name, 'n' if kind is int else '', kind.__name__,
                          text)) from None


def parse_hparams(text='', validate=True, **overrides):
  """Parses `name=value,...` over the defaults; `overrides` apply last.

  Args:
    text: the hparams string, e.g. "model=SBNRebar,n_layer=2".
    validate: check that the values can work (HParams.validate).
    **overrides: values set directly (already typed), e.g. in tests.
  Returns:
    HParams.
  Raises:
    HParamsError: one-line message naming the bad entry and the fix.
  """
  values = {}
  for item in (text or '').split(','):
    item = item.strip()
    if not item:
      continue
    if '=' not in item:
      raise HParamsError('hparams entry %r is not of the form name=value'
                         % item)
    name, value = (s.strip() for s in item.split('=', 1))
    if name not in _FIELDS:
      raise HParamsError('unknown hparam %r; valid names: %s'
                         % (name, ', '.join(_FIELDS)))
    values[name] = _parse_value(name, value)
  for name in overrides:
    if name not in _FIELDS:
      raise HParamsError('unknown hparam %r; valid names: %s'
                         % (name, ', '.join(_FIELDS)))
  values.update(overrides)
  hparams = HParams(**values)
  return hparams.validate() if validate else hparams
