"""Shared defaults: the seed experiment (see README, "The seed experiment").

Every other config imports this one and overrides a few fields. Field names are
an interface (sweeps, reports and checks read them): rename nothing lightly.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # Data: any TFDS image classification dataset with `image` and `label`.
  config.dataset = 'cifar10'
  config.data_dir = ml_collections.config_dict.placeholder(str)  # None: TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  config.train_split = 'train'
  config.eval_split = 'test'
  # Try TFDS's download when the dataset is not prepared. Datasets that need a
  # manual download (or machines without network) stop with a message instead.
  config.download = True

  # The seed: 20 steps per pass over CIFAR-10's 50,000 images.
  config.batch_size = 2500  # Global: split over every device of every host.
  config.eval_batch_size = 2500  # Global; the last eval batch is padded and masked.
  config.num_epochs = 20
  config.seed = 0

  # Adam with TF1's defaults. optax adds eps to sqrt of the bias-corrected
  # second moment, TF1 to the uncorrected one; at eps=1e-8 the difference is
  # far below anything these runs can resolve.
  config.optimizer = 'adam'  # adam | sgd (sgd uses `momentum`; 0 = plain SGD)
  config.learning_rate = 1e-3
  config.lr_schedule = 'constant'  # constant | cosine (decays to 0 at the end)
  config.warmup_epochs = 0.0
  config.b1 = 0.9
  config.b2 = 0.999
  config.eps = 1e-8
  config.momentum = 0.9
  config.weight_decay = 0.0  # Decoupled (AdamW-style for adam); 0 in the seed.

  # The seed wrote summaries every 2 steps. train/* scalars are means over the
  # steps since the last write.
  config.log_every_steps = 2
  config.checkpoint_every_epochs = 1
  config.max_checkpoints_to_keep = 3

  config.model = ml_collections.ConfigDict()
  config.model.filters = (30, 50, 60)
  config.model.strides = (2, 1, 1)
  config.model.kernel_size = 3
  config.model.padding = 'VALID'
  config.model.dense = (3500, 700)
  # none | batch.
  config.model.norm = 'none'
  # input: a norm at the input of every conv and dense layer, the raw image and
  #   the logits layer included (the seed; layers keep their biases).
  # pre_act: layer -> norm -> ReLU with the layer's bias dropped, since the
  #   norm's mean subtraction cancels it (Ioffe & Szegedy 2015). The logits
  #   layer gets no norm.
  config.model.placement = 'input'
  # A decay: running = momentum * running + (1 - momentum) * batch, as in Flax
  # and Keras. PyTorch's momentum is 1 - ours (its 0.1 is our 0.9).
  # 0.99 and 1e-3 are tf.layers.batch_normalization's defaults, the seed's.
  config.model.bn_momentum = 0.99
  config.model.bn_epsilon = 1e-3

  return config
