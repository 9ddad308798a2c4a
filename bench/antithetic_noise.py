"""ARM and DisARM with several stochastic layers: should the partner pass of
layer l share the noise of the layers above l with the hard pass, or draw
its own? Both are unbiased (tests/test_antithetic.py); this measures which
gives the lower variance.

  python bench/antithetic_noise.py --data_dir=~/.rebar/data [--draws=1000]

For each model (SBNARM, SBNDisARM), n_layer (2, 3) and stage (the initial
weights, and after --train_steps steps of the model's own training, batch
24, learning rate 0.0003, seed 1), it draws --draws independent gradient
estimates on one fixed batch of 24 MNIST training images, with the same
weights, under each choice, and prints the variance of the recognition
gradient per element averaged over the elements of each layer's q, as log
variance (the tracker's measure), shared minus independent (negative: shared
is lower), and the ratio of the variances.
"""

import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from rebar import cli  # pylint: disable=g-import-not-at-top,wrong-import-position


def define_flags(flag_values):
  cli.define_data_flags(flag_values)
  flags.DEFINE_integer('draws', 1000, 'Gradient estimates per choice.',
                       flag_values=flag_values)
  flags.DEFINE_integer('train_steps', 4168, 'Training steps before the '
                       'second measurement (2 epochs).',
                       flag_values=flag_values)


COMMAND = cli.Command(
    name='antithetic_noise.py', prog='python bench/antithetic_noise.py',
    synopsis='[flags]', description=cli.first_paragraph(__doc__),
    define_flags=define_flags)


def layer_variances(model, x, draws, estimator):
  """[n_layer] mean per-element variance of the q-gradient of each layer."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from rebar.step import Step  # pylint: disable=g-import-not-at-top
  network = model.network
  position = {id(v): i for i, v in enumerate(model.model_variables)}
  q_index = [[position[id(v)] for v in layer.variables_in_order]
             for layer in network.q_layers]

  @tf.function
  def one():
    noise = network.sample_noise(model.noise_generator, tf.shape(x)[0])
    grads = estimator.estimate(Step(network, x, noise)).model_grads
    return [tf.concat([tf.reshape(grads[i], [-1]) for i in idx], 0)
            for idx in q_index]

  samples = [[] for _ in q_index]
  for _ in range(draws):
    for layer, g in enumerate(one()):
      samples[layer].append(g.numpy().astype(np.float64))
  return [float(np.mean(np.var(np.stack(s), axis=0, ddof=1)))
          for s in samples]


def main(argv=None):
  args = COMMAND.parse(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rebar import quiet  # pylint: disable=g-import-not-at-top
  tf = quiet.import_tensorflow()
  from rebar import data, models, runtime, train  # pylint: disable=g-import-not-at-top
  from rebar.estimator_modules import AntitheticEstimator  # pylint: disable=g-import-not-at-top
  from rebar.hparams import parse_hparams  # pylint: disable=g-import-not-at-top
  runtime.configure()
  print('%-10s %-7s %-12s %5s %12s %12s %10s %8s' % (
      'model', 'n_layer', 'stage', 'layer', 'log var sh', 'log var ind',
      'sh - ind', 'ratio'), flush=True)
  for name in ('SBNARM', 'SBNDisARM'):
    for n_layer in (2, 3):
      hparams = parse_hparams('model=%s,n_layer=%d,learning_rate=0.0003'
                              % (name, n_layer))
      train_x, _, _ = data.load_data(hparams, args.data_dir, compact=True)
      model = models.build_model(
          hparams, train_x.mean(axis=0, dtype=np.float32), 1)
      x = tf.constant(train_x[:24].astype(np.float32))
      independent = AntitheticEstimator(
          model.network, None, model.estimators[0].kind,
          above_noise=tf.random.Generator.from_seed(7))
      trainer = train.Trainer(model, train_x)
      for stage in ('initial', 'trained'):
        if stage == 'trained':
          order = train.epoch_permutation(1, 0, trainer.n_train)
          steps = args.train_steps
          rows = np.resize(order, steps * 24).reshape(steps, 24)
          for start in range(0, steps, 100):
            trainer.run_block(tf.constant(rows[start:start + 100]
                                          .astype(np.int32)))
        shared = layer_variances(model, x, args.draws, model.estimators[0])
        other = layer_variances(model, x, args.draws, independent)
        for layer, (a, b) in enumerate(zip(shared, other)):
          print('%-10s %-7d %-12s %5d %12.4f %12.4f %10.4f %8.3f' % (
              name, n_layer, stage, layer, np.log(a), np.log(b),
              np.log(a) - np.log(b), a / b), flush=True)


if __name__ == '__main__':
  main()
