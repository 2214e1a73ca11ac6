"""What the tests share: the repository's ROOT, tiny configs, learnable fake
datasets, main.py command builders (as a subprocess or in this process),
tiny training, and event readers."""

import contextlib
import io
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags

from bn_study import errors
from bn_study import models
from bn_study.data import input_pipeline
from bn_study.runtime import mesh as mesh_lib
from bn_study.studies import runs
from bn_study.training import checkpoints
from bn_study.training import loop
from bn_study.training import optim
from bn_study.training import steps as steps_lib
from configs import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Compiling, not running, is most of what the tiny models cost. The session
# (conftest) compiles with XLA:CPU's backend (LLVM) at optimization level 0,
# which took 28-56% off in-process training tests on 2 cores (README), and
# with its older fusion emitters, not its MLIR ones, a third less CPU again
# (docs/tests.md). Subprocesses inherit both.
FAST_COMPILE = {'xla_backend_optimization_level': '0',
                'xla_cpu_use_fusion_emitters': 'false'}


def env_with_xla_emitters(env=None):
  """`env` (default: this process's) without FAST_COMPILE's choice of fusion
  emitters: for main.py runs compared bit for bit with differently built
  programs (several steps a call against one, a run stopped and resumed).
  XLA's own emitters, what users run, give such programs the same bits;
  the older ones round them differently (docs/tests.md)."""
  return env_without_xla_flags('xla_cpu_use_fusion_emitters', env=env)


def env_without_xla_flags(*names, env=None):
  """`env` (default: this process's) with XLA_FLAGS less the flags `names`,
  for subprocesses that choose them (or XLA's default) themselves."""
  env = dict(os.environ if env is None else env)
  env['XLA_FLAGS'] = ' '.join(
      f for f in env.get('XLA_FLAGS', '').split()
      if not any(f.startswith(f'--{name}') for name in names))
  return env


def tiny_config(**overrides):
  config = tiny.get_config()
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def learnable_images(num_examples, seed=0, shape=(32, 32, 3), num_classes=10):
  """uint8 noise images with a bright horizontal band whose row is the label.

  A small network learns them in a few dozen steps, but only if eval
  normalizes with the right population statistics: raw pixels are far from
  mean 0, variance 1.
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num_examples)
  images = rng.normal(90, 30, (num_examples, *shape))
  band = shape[0] // num_classes
  for i, label in enumerate(labels):
    images[i, label * band:(label + 1) * band] += 120
  return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def mock_learnable(num_train, num_eval):
  """tfds.testing.mock_data whose splits are `learnable_images`."""

  def as_dataset(self, split, **unused):
    n, seed = (num_train, 1) if split == 'train' else (num_eval, 2)
    images, labels = learnable_images(n, seed, self.info.features['image'].shape)
    return tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})

  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def env_without_device_count():
  """This environment, less any simulated device count, for subprocesses
  that set their own (tests/run_tiny.py, tests/dump_batches.py)."""
  return env_without_xla_flags('xla_force_host_platform_device_count')


def eval_batches(pipeline, mesh):
  """A host pipeline's eval batches as global arrays (feeds.HostFeed.eval)."""
  for batch in pipeline.eval():
    yield mesh_lib.global_batch(batch, mesh)


def read_scalars(workdir):
  """{tag: [(step, value), ...]} from every event file in `workdir`."""
  return {tag: list(zip(series.steps.tolist(), series.values.tolist()))
          for tag, series in runs.read_scalars(workdir).items()}


LEARNABLE = 'bn_study_learnable'  # The on-disk dataset below.


def prepare_learnable(data_dir, num_train=64, num_eval=21):
  """Writes `learnable_images` as a real prepared TFDS dataset in `data_dir`.

  For tests that run main.py in a subprocess, where tfds.testing.mock_data
  cannot reach: pass --config.dataset=bn_study_learnable
  --config.data_dir=DATA_DIR.
  """
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(32, 32, 3)),
      'label': tfds.features.ClassLabel(num_classes=10)})
  splits = {}
  for split, n, seed in (('train', num_train, 1), ('test', num_eval, 2)):
    images, labels = learnable_images(n, seed)
    splits[split] = tf.data.Dataset.from_tensor_slices(
        {'image': images, 'label': labels})
  tfds.dataset_builders.store_as_tfds_dataset(
      name=LEARNABLE, version='1.0.0', features=features,
      split_datasets=splits, data_dir=str(data_dir))
  return str(data_dir)


TIMING_TAGS = ('steps_per_sec', 'uptime')  # Scalars that differ run to run.


def final_result(workdir):
  """(last step, final state as numpy leaves by path, logged scalars without
  timing) of a main.py run."""
  step = checkpoints.Checkpoints(str(workdir), read_only=True).latest_step()
  state = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), checkpoints.STATE))
  leaves = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(state)}
  scalars = {t: v for t, v in read_scalars(str(workdir)).items()
             if t not in TIMING_TAGS}
  return step, leaves, scalars


def assert_same_result(got, want):
  """Bit for bit: the same last step, state and scalars."""
  assert got[0] == want[0]
  assert got[1].keys() == want[1].keys()
  for key in want[1]:
    np.testing.assert_array_equal(got[1][key], want[1][key], err_msg=key)
  assert got[2] == want[2]


def train_tiny(workdir, num_train=64, num_eval=21, **overrides):
  """The tiny config, trained in this process on `mock_learnable` data
  (64 images: 8 steps of 8 per epoch; 21 eval images: 3 batches, the last
  padded); the final state."""
  with mock_learnable(num_train, num_eval):
    return loop.train_and_evaluate(tiny_config(**overrides), str(workdir))


def setup_tiny(num_train, num_eval, **overrides):
  """The tiny config's parts, for tests that drive the steps themselves:
  (config, pipeline over `mock_learnable` data, mesh, model, train state,
  jitted steps)."""
  config = tiny_config(**overrides)
  with mock_learnable(num_train, num_eval):
    pipeline = input_pipeline.Pipeline(config)
  mesh = mesh_lib.make_mesh()
  model = models.create_model(config.model, pipeline.info.num_classes)
  tx, schedule = optim.make_optimizer(config, pipeline.steps_per_epoch)
  state = steps_lib.create_train_state(config, model,
                                       pipeline.info.image_shape, tx, mesh)
  return config, pipeline, mesh, model, state, steps_lib.jit_steps(mesh,
                                                                   schedule)


def main_command(workdir, *flags_, config='configs/tiny.py'):
  """`python main.py` with `config`, `workdir` and more flags, as argv."""
  return [sys.executable, 'main.py', f'--config={config}',
          f'--workdir={workdir}', *flags_]


def run_main(workdir, *flags_, env=None, timeout=600, config='configs/tiny.py'):
  """main.py in a subprocess from the repository root: for what needs a
  process (signals, the device count, the process's own setup)."""
  return subprocess.run(main_command(workdir, *flags_, config=config),
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


@contextlib.contextmanager
def main_flags(argv):
  """main.py's flags, fresh, with `argv` as this process's command line
  while in the block (ml_collections reads --config.FIELD overrides from
  sys.argv, and defines them while parsing: the last parse's go first)."""
  import main  # pylint: disable=g-import-not-at-top,unused-import
  for name in [n for n in flags.FLAGS if n.startswith('config.')]:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  # ml_collections loads --config as module `config_config`, and a second
  # load by that name would reuse the first file's module.
  sys.modules.pop('config_config', None)
  saved, sys.argv = sys.argv, ['main.py', *argv]
  try:
    yield sys.argv
  finally:
    sys.argv = saved


def main_in_process(argv):
  """(exit status, stderr) of main.py with `argv` (its flags), run in this
  process through main.py's own flag parsing and main(); for mistakes
  caught before any work, without a process's 5-8 s of imports. The
  compilation cache stays the session's."""
  import main  # pylint: disable=g-import-not-at-top
  err, code = io.StringIO(), 0
  with main_flags([*argv, '--compilation_cache_dir=']) as full_argv:
    try:
      with contextlib.redirect_stderr(err):
        main.main(errors.parse_flags(full_argv))
    except SystemExit as e:
      code = e.code
  return code, err.getvalue()


def main_here(workdir, *flags_, config='configs/tiny.py'):
  """(exit status, stderr) of `main_command`'s run, in this process from the
  repository root (main_in_process): for runs that need no process."""
  with contextlib.chdir(ROOT):
    return main_in_process(main_command(workdir, *flags_, config=config)[2:])


def write_tiny_sweep(path, data_dir, norms=('none', 'batch'), seeds=(0, 1),
                     combine='product'):
  """A sweep file over the tiny config on the learnable on-disk dataset:
  every norm with every seed (`combine='product'`), or pairs ('zipped')."""
  path.write_text(textwrap.dedent(f'''\
      from bn_study import sweep

      CONFIG = 'configs/tiny.py'


      def get_sweep(arg=''):
        return sweep.product(
            sweep.values('dataset', ['{LEARNABLE}']),
            sweep.values('data_dir', [{str(data_dir)!r}]),
            sweep.{combine}(sweep.values('model.norm', {list(norms)!r}),
                           sweep.values('seed', {list(seeds)!r})))
      '''))
  return str(path)


def run_sweep(*args, timeout=900):
  return subprocess.run([sys.executable, '-m', 'bn_study.sweep', *args],
                        cwd=ROOT, capture_output=True, text=True, check=False,
                        timeout=timeout)
