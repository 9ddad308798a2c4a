"""A training run's peak memory, estimated from its hparams alone.

`check_fits` is meant to run before the data is loaded or TensorFlow is
imported (this module imports neither), so that sizes that cannot fit, such as
n_hidden=1000000, n_samples=100000 or n_layer=1000, fail at once with one
line instead of tracing and compiling for minutes and then dying of memory
or a segfault.

The estimate is rough on purpose: it is there to refuse sizes that are out
of reach, never a sensible run, so each part is taken on the high side of
what rebar_train measured: peak resident memory (`/usr/bin/time -v`), one
thread, --eval_freq=0, at most 200 steps, binarized MNIST, 2026-12-01; a
range is over runs of two revisions of the training code, whose peaks
differed by up to 300 MB. "train" leaves out the evaluation's part, which
those runs did not reach; "all" is estimate_step_bytes. MB are 2^20 bytes
here; the error message's GB are 10^9.

  hparams                                   measured MB  train MB  all MB
  model=SBN (the defaults' sizes)               638-953      1064    1101
  model=SBN,n_samples=1000                          857      1677    1714
  model=SBN,n_hidden=20000                    1207-1514      1793    2586
  model=SBN,n_layer=100                            1977      2848    3641
  model=SBN,n_layer=300                            4314      6453    8771
  model=SBNRebar,n_layer=6                         1327      1842    1918
  model=SBNDynamicRebar,n_layer=2              930-1227      1282    1327
  model=SBNDynamicRebar,n_layer=2,n_samples=200
                                              1827-1876      2247    2292
  model=SBNTrackGradVariances,n_layer=2        842-1215      1463    1508
  model=SBNTrackGradVariances,n_hidden=10000
                                              1782-1981      2218    2630
  With --final_eval: model=SBN,n_hidden=5000 1137 (all 1461).

The peak is the sum of
  baseline      TensorFlow's import and runtime (TF_BASELINE_BYTES) and
                the fixed part of XLA's compilation of the training step
                (XLA_COMPILE_BYTES);
  compilation   COMPILE_BYTES_PER_LAYER_PASS for each (stochastic layer,
                pass) pair the step computes: XLA compiles the whole step as
                one program, whose size grows with them (quadratically in
                n_layer for the per-layer REBAR terms);
  parameters    every model parameter's variable, Adam slots, variance EMA
                and gradients, more for models with several estimators;
  data          the training rows held by the trainer and the validation
                and test rows on the host;
  activations   the step's: batch_size * n_samples rows of each pass's
                units, kept for the backward pass;
  evaluation    EVAL_ROWS_PER_CALL rows of the hard pass.
"""

import os

from rebar.hparams import (CATEGORICAL_MODELS, TRACKED_CATEGORICAL, HParams,
                           HParamsError)

MB = 1 << 20
GB = 1e9
FLOAT_BYTES = 4

# Importing TensorFlow 2.21 peaks at 547-591 MB (docs/performance.md).
TF_BASELINE_BYTES = 550 * MB
# The step's compilation and the runtime beyond the import; with the import,
# 640-950 MB for a one-layer SBN.
XLA_COMPILE_BYTES = 400 * MB
# SBN's peak grew by 8-19 MB per stochastic layer from 1 to 300 layers
# (12 MB from 100 to 300, compiling for 0.5-0.8 s per layer); the REBAR
# models' by 10-13 MB per layer pass (n_layer 2 to 6).
COMPILE_BYTES_PER_LAYER_PASS = 16 * MB

# rebar/evaluation.py's EVAL_ROWS_PER_CALL (not imported: it imports TensorFlow).
EVAL_ROWS_PER_CALL = 5000
# Validation and test rows of the largest dataset (MNIST: 10,000 each).
EVAL_DATA_ROWS = 20000
# rebar/estimator_modules.py's BASELINE_HIDDEN, rebar/rebar_modules.py's
# RELAX_HIDDEN.
BASELINE_HIDDEN = 100
RELAX_HIDDEN = 200

# The activations of a pass are kept for the backward pass, which forms a
# gradient of each: measured 1.0x (SBN) to 1.7x (Dynamic REBAR) the forward
# pass's floats.
BACKWARD_FACTOR = 2
# Floats per model parameter: the variable, Adam's two slots, the variance
# EMA, the gradient and Adam's temporaries (measured about 4.5 for SBN).
PARAM_FLOATS = 6
# More per parameter for each further estimator's gradient and EMA
# (SBNTrackGradVariances measured about 16 in all), and for REBAR's two
# partial gradients.
PARAM_FLOATS_PER_TRACKED_ESTIMATOR = 2
PARAM_FLOATS_REBAR = 2
# The auxiliary variables: variable, Adam's two slots, gradient.
AUX_PARAM_FLOATS = 4
# Sizes named in the error message, each judged by how much setting it back
# to its default would save.
SIZE_HPARAMS = ('n_hidden', 'n_layer', 'n_samples', 'batch_size')
_DEFAULTS = HParams()


def _map_params(n_in, n_out, n_hidden, nonlinear):
  """Weights and biases of the deterministic map T(n_in -> n_out)."""
  if nonlinear:
    return (n_in * n_hidden + n_hidden + n_hidden * n_hidden + n_hidden
            + n_hidden * n_out + n_out)
  return n_in * n_out + n_out


def _relax_cv(hparams):
  return 'rebar' if hparams.model == 'SBNRebarPerLayer' else hparams.relax_cv


def _relax_params(hparams):
  """Weights of the r_ρ networks: layer l's takes n_input + (l + 1) n_hidden
  inputs, then relax_depth ReLU layers of RELAX_HIDDEN units, then one."""
  n_layer, width = hparams.n_layer, RELAX_HIDDEN
  inputs = n_layer * hparams.n_input + hparams.n_hidden * (
      n_layer * (n_layer + 1) // 2)
  return (inputs * width + n_layer * (
      width + (hparams.relax_depth - 1) * (width * width + width)
      + width + 1))


def parameter_counts(hparams):
  """(model parameters, auxiliary parameters) of the model `hparams` names.

  The model's are the SBN's variables (rebar/sbn.py SBNNetwork); the
  auxiliary ones the estimators' baselines, etas, temperatures and RELAX
  networks (rebar/estimator_modules.py, rebar/rebar_modules.py). Closed forms, so that absurd sizes cost no
  time.
  """
  h = hparams
  n_hidden, n_layer, nonlinear = h.n_hidden, h.n_layer, h.nonlinear
  conditional = h.task == 'sp'
  if conditional:
    n_q_in, n_out = h.n_input // 2, h.n_input - h.n_input // 2
  else:
    n_q_in, n_out = h.n_input, h.n_input
  multilayer_p = not conditional or h.sp_multilayer
  inner = (n_layer - 1) * _map_params(n_hidden, n_hidden, n_hidden, nonlinear)
  model = _map_params(n_q_in, n_hidden, n_hidden, nonlinear) + inner
  if multilayer_p:
    # The prior, p's bottom map to the pixels and the maps between layers.
    model += n_hidden + _map_params(n_hidden, n_out, n_hidden,
                                    nonlinear) + inner
  else:
    model += _map_params(n_hidden, n_out, n_hidden, nonlinear)

  baseline = (h.n_input * BASELINE_HIDDEN + BASELINE_HIDDEN
              + BASELINE_HIDDEN + 1)
  n_maps = n_layer + (n_layer if multilayer_p else 1)
  n_variables = (1 if multilayer_p else 0) + n_maps * (6 if nonlinear else 2)
  rebar = baseline + n_variables  # and one eta per model variable
  relax = 2 * n_layer  # a temperature and an eta per layer
  if _relax_cv(h) != 'rebar':
    relax += _relax_params(h)
  simple_muprop = baseline + 1
  muprop = n_layer * (baseline + 2)
  aux = {
      'SBN': 0,
      'SBNNVIL': baseline,
      'SBNSimpleMuProp': simple_muprop,
      'SBNMuProp': muprop,
      'SBNGumbel': 0,
      'SBNRebar': rebar,
      'SBNDynamicRebar': rebar + 1,
      'SBNRelax': relax,
      'SBNRebarPerLayer': relax,
      'SBNReinforceLOO': 0,
      'SBNARM': 0,
      'SBNDisARM': 0,
      'SBNTrackGradVariances': (baseline + simple_muprop + muprop + 2 * rebar
                                + 1 + (relax if 'relax' in h.tracked_extras()
                                       else 0)),
  }[h.model]
  return model, aux


def _rebar_passes(hparams):
  """(passes, layer passes) of one REBAR estimator's relaxed terms.

  With `quadratic`, term k runs two passes from layer k up (the relaxed and
  the conditional one): sum_k 2 (L - k) = L (L + 1) layer passes.
  """
  n_layer = hparams.n_layer
  if hparams.quadratic:
    return 2 * n_layer, n_layer * (n_layer + 1)
  return 2, 2 * n_layer


def _relax_passes(hparams):
  """(passes, layer passes) of RELAX's control variates: two per layer l,
  each a relaxed pass from l up unless c is r_ρ alone."""
  n_layer = hparams.n_layer
  if _relax_cv(hparams) == 'free':
    return 0, 0
  return 2 * n_layer, n_layer * (n_layer + 1)


def step_passes(hparams):
  """(passes, layer passes) of one training step, the hard pass included.

  A pass runs q and p and p's output over the pixels; a layer pass is one
  stochastic layer of one pass (a partial pass, from layer k up, counts
  only its layers).
  """
  n_layer = hparams.n_layer
  rebar = _rebar_passes(hparams)
  relax = _relax_passes(hparams)
  hard = mean = relaxed = (1, n_layer)
  # ARM and DisARM: the antithetic partner's pass from each layer up.
  antithetic = (n_layer, n_layer * (n_layer + 1) // 2)
  # Dynamic REBAR differentiates each relaxed pass in the temperature by a
  # forward-mode pass of the same size.
  dynamic = (2 * rebar[0], 2 * rebar[1])
  parts = {
      'SBN': [hard],
      'SBNNVIL': [hard],
      'SBNSimpleMuProp': [hard, mean],
      # MuProp also differentiates the mean pass in its activations.
      'SBNMuProp': [hard, mean, mean],
      'SBNGumbel': [hard, relaxed],
      'SBNRebar': [hard, rebar],
      'SBNDynamicRebar': [hard, dynamic],
      'SBNRelax': [hard, relax],
      'SBNRebarPerLayer': [hard, relax],
      'SBNReinforceLOO': [hard],
      'SBNARM': [hard, antithetic],
      'SBNDisARM': [hard, antithetic],
      'SBNTrackGradVariances': [hard, mean, mean, dynamic, rebar] + (
          [relax] if 'relax' in hparams.tracked_extras() else []) + [
              antithetic for e in hparams.tracked_extras() if e != 'relax'],
  }[hparams.model]
  return sum(p for p, _ in parts), sum(l for _, l in parts)


def _param_floats(hparams):
  """Floats per model parameter (PARAM_FLOATS and the extras)."""
  floats = PARAM_FLOATS
  if hparams.model == 'SBNTrackGradVariances':
    extra_estimators = 4 + len(hparams.tracked_extras())
    floats += PARAM_FLOATS_PER_TRACKED_ESTIMATOR * extra_estimators
  if hparams.model in ('SBNRebar', 'SBNDynamicRebar', 'SBNTrackGradVariances'):
    floats += PARAM_FLOATS_REBAR
  return floats


def _uses_relax_network(hparams):
  relax_model = (hparams.model in ('SBNRelax', 'SBNRebarPerLayer')
                 or (hparams.model == 'SBNTrackGradVariances'
                     and 'relax' in hparams.tracked_extras()))
  return relax_model and _relax_cv(hparams) != 'rebar'


def estimate_breakdown(hparams, n_train_rows=50000):
  """The parts of estimate_step_bytes, {name: bytes}; it is their sum.

  Keys: baseline, compilation, parameters, data, activations, evaluation.
  The step's activations and the evaluation's are never alive together,
  but counting both costs at most a factor 2 on the larger, and keeps the
  estimate growing with every size.
  """
  h = hparams
  if h.model in CATEGORICAL_MODELS:
    return _categorical_breakdown(h, n_train_rows)
  n_input, n_hidden, n_layer = h.n_input, h.n_hidden, h.n_layer
  passes, layer_passes = step_passes(h)
  # Floats per row of one unit in one layer pass: q's logits and sample,
  # p's logits and log-likelihood terms; with `nonlinear` also the two tanh
  # layers of q's map and of p's.
  unit_floats = 8 if h.nonlinear else 4

  model_params, aux_params = parameter_counts(h)
  parameters = FLOAT_BYTES * (_param_floats(h) * model_params
                              + AUX_PARAM_FLOATS * aux_params)

  per_row = BACKWARD_FACTOR * (passes * 2 * n_input
                               + layer_passes * n_hidden * unit_floats)
  if _uses_relax_network(h):
    # r_ρ's input and hidden layers, for c(z) and c(z~) at every layer.
    per_row += BACKWARD_FACTOR * 2 * n_layer * (
        n_input + n_layer * n_hidden + h.relax_depth * RELAX_HIDDEN)
  # The uniforms u and the conditional noise v; the batch as floats,
  # gathered and then tiled n_samples times.
  per_row += 2 * n_layer * n_hidden + 2 * n_input
  activations = FLOAT_BYTES * h.batch_size * h.n_samples * per_row

  # The hard pass alone, without gradients: per unit its uniforms (drawn
  # before the compiled bound) and its sample, which p reads after q's last
  # layer; a nonlinear map's tanh layers too. Measured: 1.0 float per unit
  # (n_hidden=5000, one linear layer).
  evaluation = FLOAT_BYTES * EVAL_ROWS_PER_CALL * (
      n_layer * n_hidden * (4 if h.nonlinear else 2) + 2 * n_input)

  # Grey levels (dynamic_b) are float32, binary pixels one byte; the host's
  # copy and the trainer's exist together while the trainer is built.
  pixel_bytes = FLOAT_BYTES if h.dynamic_b else 1
  data = pixel_bytes * n_input * (2 * n_train_rows + EVAL_DATA_ROWS)

  return {
      'baseline': TF_BASELINE_BYTES + XLA_COMPILE_BYTES,
      'compilation': COMPILE_BYTES_PER_LAYER_PASS * layer_passes,
      'parameters': parameters,
      'data': data,
      'activations': activations,
      'evaluation': evaluation,
  }


# rebar/categorical_vae.py's layer sizes.
CATEGORICAL_HIDDEN = (512, 256)


def _categorical_breakdown(h, n_train_rows):
  """estimate_breakdown of a CategoricalVAE run: the same parts, from its
  encoder and decoder (rebar/categorical_vae.py) and the estimator's f
  evaluations per row (ARSM: at most one per pair of classes and the
  sample; ARS: one per class and the sample)."""
  n_z = h.n_latent * h.n_categories
  sizes = (h.n_input,) + CATEGORICAL_HIDDEN + (n_z,)
  layers = list(zip(sizes, sizes[1:])) + list(zip(sizes[::-1], sizes[-2::-1]))
  model_params = sum((n_in + 1) * n_out for n_in, n_out in layers)
  aux_params = 2
  if h.estimator == 'relax' and h.relax_cv != 'rebar':
    aux_params += (n_z + 1) * RELAX_HIDDEN + (h.relax_depth - 1) * (
        RELAX_HIDDEN + 1) * RELAX_HIDDEN + RELAX_HIDDEN + 1
  per_estimator = {'arsm': 1 + h.n_categories * (h.n_categories - 1) // 2,
                   'ars': 1 + h.n_categories, 'rebar': 3, 'relax': 3,
                   'gumbel_softmax': 2, 'stick_breaking_disarm': 2,
                   'reinforce_loo': 2}
  if h.model == 'CategoricalVAE':
    evaluations = per_estimator.get(h.estimator, 1)
  else:  # every tracked estimator, and a model gradient each
    evaluations = 2 * sum(per_estimator[e] for e in TRACKED_CATEGORICAL)
    model_params *= 1 + len(TRACKED_CATEGORICAL)
  decoder_floats = n_z + sum(CATEGORICAL_HIDDEN) + 2 * h.n_input
  encoder_floats = h.n_input + sum(CATEGORICAL_HIDDEN) + 3 * n_z
  per_row = BACKWARD_FACTOR * (encoder_floats + evaluations * decoder_floats)
  return {
      'baseline': TF_BASELINE_BYTES + XLA_COMPILE_BYTES,
      'compilation': 0,
      'parameters': FLOAT_BYTES * (PARAM_FLOATS * model_params
                                   + AUX_PARAM_FLOATS * aux_params),
      'data': h.n_input * (2 * n_train_rows + EVAL_DATA_ROWS),
      'activations': FLOAT_BYTES * h.batch_size * h.n_samples * per_row,
      'evaluation': FLOAT_BYTES * EVAL_ROWS_PER_CALL * (
          encoder_floats + decoder_floats),
  }


def estimate_step_bytes(hparams, n_train_rows=50000):
  """Estimated peak bytes of a training run of `hparams` (rebar_train).

  Args:
    hparams: HParams (validated).
    n_train_rows: training rows the trainer holds (50,000 for MNIST, the
      largest dataset).
  Returns:
    int bytes, rough and on the high side (see the module docstring).
  """
  return int(sum(estimate_breakdown(hparams, n_train_rows).values()))


def _read_int(path):
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    return None
  return int(text) if text.isdigit() else None


def _cgroup_free_bytes(cgroup_root):
  """What this container's cgroup memory limit leaves, or None.

  /proc/meminfo shows the whole machine, but exceeding the limit gets the
  process killed all the same. cgroup v2 (memory.max), then v1
  (memory/memory.limit_in_bytes, where no limit reads as about 2^63).
  """
  for limit_name, usage_name in (
      ('memory.max', 'memory.current'),
      (os.path.join('memory', 'memory.limit_in_bytes'),
       os.path.join('memory', 'memory.usage_in_bytes'))):
    limit = _read_int(os.path.join(cgroup_root, limit_name))
    if limit is None or limit >= 1 << 60:
      continue
    usage = _read_int(os.path.join(cgroup_root, usage_name)) or 0
    return max(limit - usage, 0)
  return None


def available_bytes(meminfo='/proc/meminfo', cgroup_root='/sys/fs/cgroup'):
  """Bytes a new process can allocate now, or None where nothing tells.

  MemAvailable of /proc/meminfo (free memory and what the kernel can
  reclaim), else the machine's physical memory (os.sysconf); lowered to
  what a cgroup memory limit leaves, where there is one.
  """
  available = None
  try:
    with open(meminfo) as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          available = int(line.split()[1]) * 1024  # its "kB" are KiB
          break
  except (OSError, ValueError, IndexError):
    pass
  if available is None:
    try:
      available = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (AttributeError, OSError, ValueError):
      pass
  limited = _cgroup_free_bytes(cgroup_root)
  if limited is not None:
    available = limited if available is None else min(available, limited)
  return available


def sizes_to_reduce(hparams, n_train_rows=50000):
  """The size hparams whose reduction saves most, largest saving first.

  Each is judged by the estimate with it back at its default; those that
  save at least a quarter of the largest saving are named.
  """
  need = estimate_step_bytes(hparams, n_train_rows)
  savings = []
  for name in SIZE_HPARAMS:
    default = getattr(_DEFAULTS, name)
    if getattr(hparams, name) <= default:
      continue
    smaller = HParams(**dict(hparams.values(), **{name: default}))
    saved = need - estimate_step_bytes(smaller, n_train_rows)
    if saved > 0:
      savings.append((saved, name))
  savings.sort(reverse=True)
  return [name for saved, name in savings if 4 * saved >= savings[0][0]]


def check_fits(hparams, available=None, n_train_rows=50000):
  """Raises HParamsError if a run of `hparams` cannot fit in memory.

  Args:
    hparams: HParams (validated).
    available: bytes the run may use; default available_bytes() (where
      that is unknown, nothing is checked).
    n_train_rows: as for estimate_step_bytes.
  Returns:
    The estimate, in bytes.
  Raises:
    HParamsError: one line: the estimate, what is available, what to
      reduce.
  """
  need = estimate_step_bytes(hparams, n_train_rows)
  if available is None:
    available = available_bytes()
  if available is None or need <= available:
    return need
  names = sizes_to_reduce(hparams, n_train_rows)
  if names:
    fix = 'reduce %s' % ' or '.join(
        '%s (now %d)' % (name, getattr(hparams, name)) for name in names)
  else:
    fix = 'free memory on this machine or use a larger one'
  raise HParamsError(
      'this run needs about %s GB of memory and this machine has %s GB '
      'available; %s' % (_gb(need), _gb(available), fix))


def _gb(n_bytes):
  # Absurd sizes give absurd estimates; 21 digits would hide the point.
  gb = n_bytes / GB
  return '%.1f' % gb if gb < 1e5 else '%.2g' % gb
