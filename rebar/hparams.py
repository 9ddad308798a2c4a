"""Hyperparameters: defaults of reference section 1, parsed from `name=value,...`.

The string form is the original's: comma-separated `name=value` pairs, each
value parsed with the type of its default (`true`/`false` for bools).
`HPARAM_HELP` says in one line what each means and `describe` lists them
with their defaults, and the models, for `rebar_train --help`.
"""

import dataclasses
import hashlib
import math
import textwrap

# The registry of models: name -> what it trains with. rebar.models defines
# a class of each name; the hparams' model choices are these.
MODELS = {
    'SBN': 'REINFORCE with a leave-one-out baseline (reference 6.1)',
    'SBNNVIL': 'NVIL, an input-dependent baseline (6.2)',
    'SBNMuProp': 'MuProp, per-layer Taylor control variates (6.4)',
    'SBNSimpleMuProp': 'MuProp\'s baseline without its correction (6.3)',
    'SBNRebar': 'REBAR at a fixed temperature (6.6)',
    'SBNDynamicRebar': 'REBAR with a learned temperature (6.7)',
    'SBNGumbel': 'the Concrete relaxation, biased (6.5)',
    'SBNTrackGradVariances': 'five estimators\' variances on one trajectory '
                             '(6.8)',
    'SBNRelax': 'RELAX per layer, control variate chosen by relax_cv',
    'SBNRebarPerLayer': 'REBAR estimated per layer (RELAX with c = f(σ_λ(z)))',
    'SBNReinforceLOO': 'REINFORCE with a leave-one-out baseline over each '
                       'example\'s n_samples samples (n_samples >= 2)',
    'SBNARM': 'ARM per layer (Yin and Zhou 2019): antithetic, no relaxation',
    'SBNDisARM': 'DisARM per layer (Dong, Mnih and Tucker 2020)',
    'CategoricalVAE': 'a VAE with n_latent categorical variables of '
                      'n_categories classes (the ARSM paper\'s), trained '
                      'with the hparam estimator',
    'CategoricalTrackGradVariances': 'the unbiased categorical estimators\' '
                                     'variances and costs on one trajectory '
                                     '(the hparam estimator\'s applied)',
}
# What each position of a model's epoch line `Step N: [...]` is (means over
# the epoch's steps), in order; the model's `printed_names` in words.
EPOCH_LINES = {
    'SBN': 'ELBO, root mean square of the centred learning signal',
    'SBNNVIL': 'ELBO',
    'SBNMuProp': 'ELBO, mean-pass ELBO',
    'SBNSimpleMuProp': 'ELBO, mean-pass ELBO',
    'SBNRebar': 'ELBO, then η of each model variable (network order)',
    'SBNDynamicRebar': 'ELBO, temperature, then η of each model variable',
    'SBNGumbel': 'ELBO, relaxed ELBO',
    'SBNTrackGradVariances': (
        'ELBO, temperature, ∂V/∂t, (∂V/∂t)², the deviation of each '
        'estimator\'s gradient EMA from their mean (NVIL, SimpleMuProp, '
        'MuProp, DynamicREBAR, REBAR; then ARM, DisARM, RELAX as track_extra '
        'adds them), log mean '
        'squared mean gradient: -inf after the first epoch, whose first step '
        'reads EMAs that start at zero, as the original printed'),
    'SBNRelax': 'ELBO, temperature of each layer, then η of each layer',
    'SBNRebarPerLayer': 'ELBO, temperature of each layer, then η of each '
                        'layer',
    'SBNReinforceLOO': 'ELBO',
    'SBNARM': 'ELBO',
    'SBNDisARM': 'ELBO',
    'CategoricalVAE': 'ELBO, decoder evaluations per example (the '
                      'estimator\'s cost; ARSM: its distinct pseudo-actions), '
                      'temperature',
    'CategoricalTrackGradVariances': 'ELBO, then the decoder evaluations per '
                                     'example of reinforce_loo (2 samples), '
                                     'rebar, relax, ars, arsm, '
                                     'stick_breaking_disarm',
}
RELAX_CONTROL_VARIATES = ('rebar', 'relax', 'free')
# The estimators of CategoricalVAE (hparam estimator), rebar/estimators/
# categorical.py's functions of these names.
CATEGORICAL_ESTIMATORS = ('reinforce_loo', 'gumbel_softmax', 'straight_through',
                          'rebar', 'relax', 'ars', 'arsm',
                          'stick_breaking_disarm')
# The binarizations of MNIST besides the task's own: threshold, grey > 0.5
# (the ARSM paper's; rebar/data.py).
BINARIZATIONS = ('', 'threshold')
# Defaults a model has of its own, where they differ from the SBN's: the
# ARSM paper's categorical VAE setup (batch 200, Adam at 0.0003, MNIST
# thresholded at 0.5).
_ARSM_SETUP = {'batch_size': 200, 'learning_rate': 0.0003,
               'binarization': 'threshold', 'estimator': 'arsm'}
MODEL_DEFAULTS = {'CategoricalVAE': _ARSM_SETUP,
                  'CategoricalTrackGradVariances': _ARSM_SETUP}
# The models of categorical variables (rebar/categorical_vae.py), and the
# estimators CategoricalTrackGradVariances follows (its hparam estimator,
# the applied one, is one of them).
CATEGORICAL_MODELS = tuple(MODEL_DEFAULTS)
TRACKED_CATEGORICAL = ('reinforce_loo', 'rebar', 'relax', 'ars', 'arsm',
                       'stick_breaking_disarm')
TASKS = ('sbn', 'sp', 'omni')
# n_input each task's data fixes: every dataset holds 28 x 28 images
# (rebar/data.py N_PIXELS, not imported here so that parsing hparams loads no
# numpy); task `sp` takes whole images too and splits them itself.
TASK_N_INPUT = {'sbn': 784, 'sp': 784, 'omni': 784}
# The longest file name (one path component) of Linux file systems, in bytes.
MAX_RUN_NAME_BYTES = 255
# Hex digits of sha256 that end a shortened run name: 48 bits, so that a
# collision between two shortened names is out of reach in practice.
RUN_NAME_HASH_DIGITS = 12
# Hparams that the original did not have.
EXTENSIONS = ('sp_multilayer', 'quadratic_fix', 'relax_cv', 'relax_depth',
              'relax_weight_decay', 'var_lr_scale', 'track_relax',
              'track_extra', 'estimator', 'n_latent', 'n_categories',
              'binarization')
# Estimators SBNTrackGradVariances can add to its five (hparam track_extra),
# in the order they are added.
TRACK_EXTRAS = ('arm', 'disarm', 'relax')


# One line per hparam, for `rebar_train --help` (the README's hparams table
# says the same at more length).
HPARAM_HELP = {
    'model': 'the estimator; one of the models below',
    'n_hidden': 'units per stochastic layer',
    'n_input': 'pixels per image; fixed by the task, leave it out',
    'n_layer': 'stochastic layers',
    'nonlinear': 'two tanh layers between stochastic layers instead of one '
                 'linear layer',
    'learning_rate': 'Adam\'s learning rate; baselines, etas and the '
                     'temperature use 10x (RELAX models: var_lr_scale x)',
    'temperature': 'relaxation temperature (the initial value where it is '
                   'learned)',
    'n_samples': 'samples per example',
    'batch_size': 'examples per step',
    'trial': 'labels a run',
    'muprop_relaxation': 'the REBAR paper\'s relaxation instead of plain '
                         'Concrete',
    'dynamic_b': 'binarize each training batch afresh from grey levels '
                 '(tasks sbn, omni)',
    'quadratic': 'REBAR\'s per-layer control variate (the original\'s; '
                 'biased for n_layer >= 2)',
    'beta2': 'Adam\'s second-moment decay',
    'task': 'sbn: MNIST; sp: structured prediction (bottom half of MNIST '
            'from the top half); omni: Omniglot',
    'sp_multilayer': 'added: task sp with n_layer stochastic layers in the '
                     'generator (the original has one)',
    'quadratic_fix': 'added: the unbiased form of the per-layer control '
                     'variate',
    'relax_cv': 'added, RELAX: control variate c, one of rebar '
                'f(sigma_lambda(z)), relax f(sigma_lambda(z)) + r_rho(z), '
                'free r_rho(z)',
    'relax_depth': 'added, RELAX: ReLU layers (200 units) of r_rho',
    'relax_weight_decay': 'added, RELAX: L2 weight decay on rho in the '
                          'variance objective',
    'var_lr_scale': 'added, RELAX: learning-rate multiple of the variance '
                    'objective\'s Adam',
    'track_relax': 'added: RELAX in SBNTrackGradVariances\' comparison (the '
                   'same as track_extra=relax)',
    'track_extra': 'added: estimators SBNTrackGradVariances adds to its five, '
                   'joined by +, among arm, disarm, relax (e.g. arm+disarm)',
    'estimator': 'added, CategoricalVAE: its estimator, one of '
                 + ', '.join(CATEGORICAL_ESTIMATORS) + ' (default arsm)',
    'n_latent': 'added, CategoricalVAE: categorical latent variables',
    'n_categories': 'added, CategoricalVAE: classes of each variable',
    'binarization': 'added: threshold binarizes MNIST at grey > 0.5, the '
                    'ARSM paper\'s (55,000/5,000/10,000 images); empty: the '
                    'task\'s own data (CategoricalVAE\'s default: threshold)',
}


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
  track_extra: estimators SBNTrackGradVariances adds to its five, joined by
    `+` (the hparams string separates pairs by commas), among TRACK_EXTRAS;
    track_relax=true adds `relax` too.
  CategoricalVAE (rebar/categorical_vae.py): estimator (one of
    CATEGORICAL_ESTIMATORS), n_latent variables of n_categories classes;
    its own defaults are MODEL_DEFAULTS'. binarization: '' (the task's own
    data) or threshold (MNIST at grey > 0.5, task sbn).
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
  track_extra: str = ''
  estimator: str = ''
  n_latent: int = 20
  n_categories: int = 10
  binarization: str = ''

  def tracked_extras(self):
    """The extra estimators of SBNTrackGradVariances, in TRACK_EXTRAS
    order: track_extra's, and relax for track_relax."""
    named = set(filter(None, self.track_extra.split('+')))
    if self.track_relax:
      named.add('relax')
    return tuple(e for e in TRACK_EXTRAS if e in named)

  def values(self):
    """All hyperparameters as a dict name -> value."""
    return dataclasses.asdict(self)

  def run_name(self):
    """Run-directory name: sorted `name_value` pairs joined by `.` (ref. 7).

    Values are written as Python's str() writes them, as the original did.
    Hparams this project added appear only when set away from their default,
    so a run of the original's hparams gets the original's directory name.

    A name longer than MAX_RUN_NAME_BYTES (255, in UTF-8 bytes: the longest
    file name Linux file systems take) could not be created, so it is
    shortened:
      `model_<model>`, then the `name_value` pairs of the other hparams that
      differ from their defaults, sorted by name, joined by `.`, cut to fit
      (at a byte, never inside a character), and then `.hash_` and the
      first RUN_NAME_HASH_DIGITS hex digits of the sha256 of the full name.
    The hash makes two different sets of hparams give different names even
    where their readable parts are cut to the same text; a full name starts
    with `batch_size_`, a shortened one with `model_`, so the two never
    meet. Names that fit are never changed.
    """
    full = self._full_run_name()
    if len(full.encode('utf-8')) <= MAX_RUN_NAME_BYTES:
      return full
    return self._cut_to_fit(
        '.'.join(self._non_default_pairs('%s_%s')), '.', full)

  def short_name(self):
    """A readable name of the run: `model=<model>`, then the other hparams
    that differ from their defaults as `name=value`, sorted, joined by `,`
    (the --hparams text that makes the run). TensorBoard lists runs under
    it. Cut and hashed as run_name when longer than MAX_RUN_NAME_BYTES.
    """
    name = ','.join(self._non_default_pairs('%s=%s'))
    if len(name.encode('utf-8')) <= MAX_RUN_NAME_BYTES:
      return name
    return self._cut_to_fit(name, ',', self._full_run_name())

  def _non_default_pairs(self, pattern):
    values = self.values()
    return [pattern % ('model', values.pop('model'))] + [
        pattern % (k, v) for k, v in sorted(values.items())
        if v != _FIELDS[k].default]

  @staticmethod
  def _cut_to_fit(head, separator, full):
    """`head` cut to fit MAX_RUN_NAME_BYTES with `.hash_<digits of the
    sha256 of full>` appended."""
    suffix = '.hash_' + hashlib.sha256(
        full.encode('utf-8')).hexdigest()[:RUN_NAME_HASH_DIGITS]
    head = head.encode('utf-8')[:MAX_RUN_NAME_BYTES - len(suffix)]
    # A cut inside a multi-byte character drops its leading bytes; a cut at
    # a separator leaves no empty component before the hash.
    return head.decode('utf-8', errors='ignore').rstrip(separator) + suffix

  def _full_run_name(self):
    """The original's naming rule, whatever the length."""
    values = self.values()
    for name in EXTENSIONS:
      if values[name] == _FIELDS[name].default:
        del values[name]
    return '.'.join('%s_%s' % (k, v) for k, v in sorted(values.items()))

  def validate(self, check_data_sizes=True):
    """Raises HParamsError for values that cannot work.

    Args:
      check_data_sizes: also require the sizes the task's data fixes
        (n_input, TASK_N_INPUT). False for models built without data, such
        as the tests' tiny ones.
    Returns:
      self.
    """
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      # nan passes no comparison and inf passes every lower bound, so the
      # range checks below would let them through to training.
      if isinstance(field.default, float) and not math.isfinite(value):
        raise HParamsError('%s must be a finite number, got %s'
                           % (field.name, value))
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
    expected = TASK_N_INPUT[self.task]
    if check_data_sizes and self.n_input != expected:
      # Otherwise the first mismatch shows as a shape error deep inside
      # TensorFlow, after the data has loaded.
      raise HParamsError(
          'n_input must be %d for task %s (the pixels of its images%s), got '
          '%d; leave n_input out' % (
              expected, self.task,
              ', which sp splits into halves itself' if self.task == 'sp'
              else '', self.n_input))
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
    extras = [e for e in self.track_extra.split('+') if e]
    unknown = [e for e in extras if e not in TRACK_EXTRAS]
    if unknown or len(set(extras)) < len(extras) or (
        self.track_extra and len(extras) != self.track_extra.count('+') + 1):
      raise HParamsError('track_extra takes estimators joined by +, each '
                         'once, among %s; got %r'
                         % (', '.join(TRACK_EXTRAS), self.track_extra))
    if self.model == 'SBNReinforceLOO' and self.n_samples < 2:
      raise HParamsError('SBNReinforceLOO leaves one of each example\'s '
                         'samples out: set n_samples to 2 or more, got %d'
                         % self.n_samples)
    if self.task == 'sp' and self.n_input % 2:
      raise HParamsError('task sp splits images into halves: n_input must be '
                         'even, got %d' % self.n_input)
    self._validate_categorical()
    if self.dynamic_b and self.task == 'sp':
      raise HParamsError('dynamic_b is supported for task=sbn and task=omni '
                         'only (the original binarized MNIST for sbn only)')
    return self


  def _validate_categorical(self):
    """The checks of the hparams CategoricalVAE added."""
    if self.binarization not in BINARIZATIONS:
      raise HParamsError('unknown binarization %r; choose threshold or leave '
                         'it out' % self.binarization)
    if self.binarization and (self.task != 'sbn' or self.dynamic_b):
      raise HParamsError('binarization=threshold binarizes MNIST: it needs '
                         'task=sbn and dynamic_b=false')
    if self.model not in CATEGORICAL_MODELS:
      if self.estimator:
        raise HParamsError('estimator is CategoricalVAE\'s; an SBN model '
                           'is its estimator (model=%s): leave estimator out'
                           % self.model)
      return
    choices = (CATEGORICAL_ESTIMATORS if self.model == 'CategoricalVAE'
               else TRACKED_CATEGORICAL)
    if self.estimator not in choices:
      raise HParamsError('unknown estimator %r for %s; choose one of: %s'
                         % (self.estimator, self.model, ', '.join(choices)))
    if self.n_latent <= 0 or self.n_categories < 2:
      raise HParamsError('%s needs n_latent >= 1 and n_categories >= 2, got '
                         '%d and %d' % (self.model, self.n_latent,
                                        self.n_categories))
    if self.task != 'sbn':
      raise HParamsError('%s models MNIST: task must be sbn, got %s'
                         % (self.model, self.task))
    if (self.model == 'CategoricalVAE' and self.estimator == 'reinforce_loo'
        and self.n_samples < 2):
      raise HParamsError('estimator reinforce_loo leaves one of each '
                         'example\'s samples out: set n_samples to 2 or more, '
                         'got %d' % self.n_samples)


_FIELDS = {f.name: f for f in dataclasses.fields(HParams)}


def _parse_value(name, text):
  return typed_value(name, type(_FIELDS[name].default), text)


def typed_value(name, kind, text):
  """`text` as a value of type `kind` (bool: true/false/1/0) for hparam
  `name`; HParamsError (one line) if it is not one."""
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


def parse_pairs(text):
  """The `name=value,...` pairs of `text`, typed as their defaults, as a
  dict (no defaults filled in, no validation)."""
  pairs = {}
  for item in filter(None, (i.strip() for i in (text or '').split(','))):
    name, _, value = (s.strip() for s in item.partition('='))
    if name not in _FIELDS:
      raise HParamsError('unknown hparam %r; valid names: %s'
                         % (name, ', '.join(_FIELDS)))
    pairs[name] = _parse_value(name, value)
  return pairs


def parse_assignments(text, fields):
  """{name: typed value} of a `name=value,...` string, each name one of
  `fields` (name -> dataclass field, typed as its default); no defaults.

  A name given twice is an error (which one was meant?). Raises
  HParamsError (one line naming the bad entry).
  """
  values, given = {}, {}
  for item in (text or '').split(','):
    item = item.strip()
    if not item:
      continue
    if '=' not in item:
      raise HParamsError('hparams entry %r is not of the form name=value'
                         % item)
    name, value = (s.strip() for s in item.split('=', 1))
    if name not in fields:
      raise HParamsError('unknown hparam %r; valid names: %s'
                         % (name, ', '.join(fields)))
    if name in values:
      raise HParamsError('hparam %s is given twice (%s=%s and %s=%s); keep one'
                         % (name, name, given[name], name, value))
    values[name] = typed_value(name, type(fields[name].default), value)
    given[name] = value
  return values


def parse_hparams(text='', validate=True, **overrides):
  """Parses `name=value,...` over the defaults; `overrides` apply last.

  A name given twice in `text` is an error (which one was meant?); an
  override of a name in `text` is not: overrides replace it.

  Args:
    text: the hparams string, e.g. "model=SBNRebar,n_layer=2".
    validate: check that the values can work (HParams.validate). An
      `n_input` override is taken as is (tests build tiny models without
      data); in `text` it must be the task's (TASK_N_INPUT).
    **overrides: values set directly (already typed), e.g. in tests.
  Returns:
    HParams.
  Raises:
    HParamsError: one-line message naming the bad entry and the fix.
  """
  values = parse_assignments(text, _FIELDS)
  for name in overrides:
    if name not in _FIELDS:
      raise HParamsError('unknown hparam %r; valid names: %s'
                         % (name, ', '.join(_FIELDS)))
  values.update(overrides)
  for name, value in MODEL_DEFAULTS.get(values.get('model'), {}).items():
    values.setdefault(name, value)
  hparams = HParams(**values)
  if validate:
    hparams.validate(check_data_sizes='n_input' not in overrides)
  return hparams


def value_text(value):
  """An hparam value as the hparams string writes it (`true`, not `True`)."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  return str(value)


def describe(width=80):
  """Every hparam with its default and meaning, then every model: the text
  that `rebar_train --help` prints after the flags."""

  def entry(text):
    return textwrap.wrap(text, width, initial_indent='  ',
                         subsequent_indent='    ', break_on_hyphens=False)

  lines = ['hparams (--hparams="name=value,..."; each name=default below):']
  for field in dataclasses.fields(HParams):
    lines += entry('%s=%s: %s' % (field.name, value_text(field.default),
                                  HPARAM_HELP[field.name]))
  lines += ['', 'models (hparam model):']
  for name, description in MODELS.items():
    lines += entry('%s: %s' % (name, description))
  lines += ['', 'the epoch line `Step N: [...]` (means over the epoch\'s steps; '
            'the log', 'gradient variance follows on the next line):']
  for name, text in EPOCH_LINES.items():
    lines += entry('%s: %s' % (name, text))
  return '\n'.join(lines)
