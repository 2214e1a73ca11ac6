"""Writes the train batches of epochs 0 and 1 and the eval batches one
process sees, in a fresh process (device count and distributed runtime are
fixed when JAX starts; tests/data/data_path_test.py runs this):

  python -m tests.dump_batches --feed=both --out=b.npz  # host_*, device_*
  python -m tests.dump_batches --feed=device --devices=8 --out=b.npz
  python -m tests.dump_batches --feed=host --num_processes=2 --process_id=1 --out=b1.npz
"""

import argparse
import os


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--feed', choices=('host', 'device', 'both'),
                      required=True)
  parser.add_argument('--devices', type=int, default=1)
  parser.add_argument('--out', required=True)
  parser.add_argument('--augment', default='crop_flip')
  parser.add_argument('--num_processes', type=int, default=1)
  parser.add_argument('--process_id', type=int, default=0)
  parser.add_argument('--coordinator_address', default=None)
  args = parser.parse_args()
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={args.devices}')

  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bn_study.data import device_data  # pylint: disable=g-import-not-at-top
  from bn_study.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from bn_study.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top

  config = helpers.tiny_config(augment=args.augment, normalize='per_channel',
                               batch_size=16, eval_batch_size=16)
  out = {}
  if args.feed == 'both':  # One process: host_* and device_* batches.
    mesh = mesh_lib.make_mesh()
    with helpers.mock_learnable(64, 21):
      pipeline = input_pipeline.Pipeline(config)
    data = device_data.DeviceData(pipeline, config, mesh)
    for epoch in (0, 1):
      inputs = data.inputs(epoch)
      for k, batch in enumerate(pipeline.train(epoch)):
        device = jax.device_get(data.batch(inputs, k))
        for key in ('image', 'label'):
          out[f'host_train{epoch}_{k}_{key}'] = batch[key]
          out[f'device_train{epoch}_{k}_{key}'] = device[key]
    for k, (batch, device) in enumerate(zip(pipeline.eval(), data.eval())):
      for key in batch:
        out[f'host_eval{k}_{key}'] = batch[key]
        out[f'device_eval{k}_{key}'] = jax.device_get(device[key])
  elif args.feed == 'host':  # Processes without a distributed runtime.
    with helpers.mock_learnable(64, 21):
      pipeline = input_pipeline.Pipeline(
          config, process_index=args.process_id,
          process_count=args.num_processes)
    out['decoded_at_start'] = pipeline.decoded  # per_channel's statistics.
    for epoch in (0, 1):
      before = pipeline.decoded
      for k, batch in enumerate(pipeline.train(epoch)):
        out[f'train{epoch}_{k}_image'] = batch['image']
        out[f'train{epoch}_{k}_label'] = batch['label']
      out[f'decoded_in_epoch{epoch}'] = pipeline.decoded - before
  else:
    if args.num_processes > 1:
      mesh_lib.initialize_distributed(args.coordinator_address,
                                      args.num_processes, args.process_id)
    mesh = mesh_lib.make_mesh()
    with helpers.mock_learnable(64, 21):
      pipeline = input_pipeline.Pipeline(config)
    decoded_before = pipeline.decoded
    data = device_data.DeviceData(pipeline, config, mesh)
    out['decoded'] = pipeline.decoded - decoded_before

    def fetch(batch):
      return {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
              for k, v in batch.items()}

    for epoch in (0, 1):
      inputs = data.inputs(epoch)
      for k in range(data.steps_per_epoch):
        for key, v in fetch(data.batch(inputs, k)).items():
          out[f'train{epoch}_{k}_{key}'] = v
    for k, batch in enumerate(data.eval()):
      for key, v in fetch(batch).items():
        out[f'eval{k}_{key}'] = v
  np.savez(args.out, devices=jax.device_count(), **out)


if __name__ == '__main__':
  main()
