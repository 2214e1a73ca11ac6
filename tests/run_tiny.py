"""Runs the tiny config on mock data in a fresh process and saves the results.

The device count (XLA_FLAGS) and the distributed runtime must be set before
JAX starts, so scale tests run this as a subprocess. Each --run is one
training run, NAME:FIELD=VALUE,... (Python literals), in this one process,
in WORKDIR/NAME, its results in OUT/NAME.npz:

  python -m tests.run_tiny --devices=8 --workdir=W --out=O \
      --run=eight: --run=per_device:batch_size=32,model.stats_scope=per_device
  python -m tests.run_tiny --devices=4 --num_processes=2 --process_id=0 \
      --coordinator_address=localhost:12345 --workdir=W --out=O --run=two:
"""

import argparse
import os


def _overrides(spec):
  import ast  # pylint: disable=g-import-not-at-top
  overrides = {'batch_size': 16, 'eval_batch_size': 16}
  for item in filter(None, spec.split(',')):
    key, value = item.split('=', 1)
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  return overrides


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--devices', type=int, default=1)
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--run', action='append', required=True,
                      help='NAME:FIELD=VALUE,... one training run.')
  parser.add_argument('--num_processes', type=int, default=1)
  parser.add_argument('--process_id', type=int, default=0)
  parser.add_argument('--coordinator_address', default=None)
  args = parser.parse_args()
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={args.devices}')

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bn_study.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from bn_study.training import loop  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top

  if args.num_processes > 1:
    mesh_lib.initialize_distributed(args.coordinator_address,
                                    args.num_processes, args.process_id)
  os.makedirs(args.out, exist_ok=True)
  for run in args.run:
    name, spec = run.split(':', 1)
    workdir = os.path.join(args.workdir, name)
    with helpers.mock_learnable(64, 21):
      state = loop.train_and_evaluate(helpers.tiny_config(**_overrides(spec)),
                                       workdir)
    leaves = jax.tree.leaves(jax.device_get((state.params, state.batch_stats)))
    if jax.process_index() == 0:
      scalars = helpers.read_scalars(workdir)
      np.savez(os.path.join(args.out, f'{name}.npz'),
               devices=jax.device_count(), processes=jax.process_count(),
               train_loss=np.array([v for _, v in scalars['train/loss']]),
               eval_loss=np.array([v for _, v in scalars['eval/loss']]),
               eval_accuracy=np.array(
                   [v for _, v in scalars['eval/accuracy']]),
               **{f'leaf{i}': np.asarray(x) for i, x in enumerate(leaves)})


if __name__ == '__main__':
  main()
