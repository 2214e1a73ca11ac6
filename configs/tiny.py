r"""A seconds-long config for tests and smoke runs (any dataset, tiny model).

  python main.py --config=configs/tiny.py --workdir=runs/tiny

Learns nothing worth reporting; it exercises every code path of the seed.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.norm = 'batch'
  config.model.filters = (4, 6, 8)
  config.model.dense = (16, 12)
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_epochs = 2
  config.log_every_steps = 1
  return config
