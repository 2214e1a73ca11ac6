"""Shared defaults: the seed's experiment, the notebook this project began
from (docs/models.md, "The seed").

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
  # augment: none | crop_flip (pad 4, random crop, random horizontal flip;
  # He et al.) | airbench (reflect-pad 2 and translate; each image flipped
  # at random once, the whole set flipped in odd epochs; Jordan 2024), each
  # image's a function of (seed, epoch, example).
  # normalize: none (pixels in [0, 1]) | per_channel (the train split's
  # per-channel mean and std). The seed used neither.
  config.augment = 'none'
  config.normalize = 'none'
  # Keep both splits on the devices as uint8 and batch, crop and normalize
  # them there (bn_study/data/device_data.py): the same batches as tf.data's,
  # without the host between steps. auto: on when they take at most a
  # quarter of a device's memory. auto | on | off
  config.data_on_device = 'auto'
  # A folder (or .tar/.tar.gz) of <split>/<class>/<image> files to read with
  # Pillow instead of TFDS, for machines without TensorFlow; the data then
  # goes to the devices. None: TFDS's `dataset`.
  config.image_folder = ml_collections.config_dict.placeholder(str)

  # The seed: 20 steps per pass over CIFAR-10's 50,000 images.
  config.batch_size = 2500  # Global: split over every device of every host.
  config.eval_batch_size = 2500  # Global; the last eval batch is padded and masked.
  config.num_epochs = 20
  config.seed = 0

  # Adam with TF1's defaults. optax adds eps to sqrt of the bias-corrected
  # second moment, TF1 to the uncorrected one: TF1's eps acts like optax's
  # eps / sqrt(1 - b2^t), larger only in the first steps (not measured here).
  config.optimizer = 'adam'  # adam | sgd (sgd uses `momentum`; 0 = plain SGD)
  config.learning_rate = 1e-3
  # constant | cosine (decays to 0 at the end) | piecewise (times
  # lr_decay_factor at each of lr_boundaries, fractions of the run).
  config.lr_schedule = 'constant'
  config.lr_boundaries = (0.5, 0.75)
  config.lr_decay_factor = 0.1
  config.warmup_epochs = 0.0  # Linear from 0, before any schedule.
  config.b1 = 0.9
  config.b2 = 0.999
  config.eps = 1e-8
  config.momentum = 0.9
  config.nesterov = False  # sgd: Nesterov's momentum.
  config.weight_decay = 0.0  # 0 in the seed.
  # decoupled: AdamW / SGDW, lr * wd * w off the weights beside the update.
  # coupled: L2, wd * w added to the gradient, as the ResNet and VGG papers.
  config.weight_decay_style = 'decoupled'
  config.weight_decay_norms = False  # Decay the norms' scale and bias too?
  config.weight_decay_biases = True  # Decay the convs' and dense biases?
  # sgd: the norms' biases (beta) learn at this multiple of the rate, their
  # weight decay unchanged (airbench94's 64; 1: off).
  config.norm_bias_lr_multiplier = 1.0
  # 0: learning_rate and weight_decay are used as given. N (airbench94's
  # 1024): both are "per N examples" (Jordan 2024): the rate on the summed
  # loss is learning_rate / (N (1 + 1 / (1 - momentum))), which is
  # batch_size times less than on the mean loss the step takes; each step
  # decays the weights by weight_decay * batch_size / (N (1 + 1 / (1 -
  # momentum))) times the schedule, through the momentum (sgd, coupled).
  config.per_examples = 0
  # triangular: from lr_start_factor * lr up to lr at lr_peak_at (a fraction
  # of the run), then down to lr_end_factor * lr at the end (airbench94's).
  config.lr_start_factor = 0.2
  config.lr_peak_at = 0.23
  config.lr_end_factor = 0.07
  # Lookahead as airbench94 (Jordan 2024): from epoch lookahead_start_epochs,
  # every lookahead_every steps (0: off) the weights and the running
  # averages move to their EMA with decay lookahead_decay^every * (step /
  # steps)^3, and the EMA is copied back; again at every epoch's end.
  config.lookahead_every = 0
  config.lookahead_decay = 0.95
  config.lookahead_start_epochs = 0.0
  # Train loss targets 1 - a on the label, a / classes everywhere (0: off).
  config.label_smoothing = 0.0
  # Adaptive gradient clipping (Brock et al. 2021b; optax's
  # adaptive_grad_clip): each unit's gradient clipped to agc_clipping times
  # its weight's norm, every layer but the classifier (0: off). NFNets use
  # 0.01-0.16, smaller for larger batches.
  config.agc_clipping = 0.0

  # The seed wrote summaries every 2 steps. train/* scalars are means over the
  # steps since the last write.
  config.log_every_steps = 2
  # Train steps per jitted call (Keras' steps_per_execution; 0: auto, calls
  # of about 50 ms from the step time). A call also ends at every step where
  # the loop acts: a log (log_every_steps), an eval, an instrument
  # measurement, an epoch's end (checkpoints, preemption). The run is
  # bit-identical whatever the value.
  config.steps_per_call = 0
  # Evaluate every this many steps as well as after each epoch (0: after each
  # epoch only).
  config.eval_every_steps = 0
  # A non-finite loss or gradient norm: stop (with a message, at the next
  # log step, keeping the last good checkpoint) or skip such steps.
  config.nonfinite = 'stop'
  config.checkpoint_every_epochs = 1
  config.max_checkpoints_to_keep = 3

  config.model = ml_collections.ConfigDict()
  # The family (bn_study/models/, docs/models.md):
  # cnn: `filters` convs then `dense` layers (the seed). mlp: `hidden` dense
  #   layers only (the BN paper's MNIST network, configs/bn_paper_fig1.py).
  # resnet_cifar: He et al.'s CIFAR ResNet-(6n+2), option A shortcuts.
  # preact_resnet: the pre-activation ResNet-10/18/34 (He et al. 2016b).
  # vgg: VGG-11/13/16/19, CIFAR form (one dense layer after the convs).
  # airbench: airbench94's network (Jordan 2024; configs/airbench94.py),
  #   one depth; width scales its 64-256-256.
  config.model.kind = 'cnn'
  # resnet_cifar, preact_resnet, vgg: depth (None: 20, 18, 16) and base width
  # (None: the published 16, 64, 64; the others scale with it).
  config.model.depth = ml_collections.config_dict.placeholder(int)
  config.model.width = ml_collections.config_dict.placeholder(int)
  # resnet_cifar: start the scale of each residual branch's last norm at 0,
  # so every block begins as the identity (Goyal et al. 2017).
  config.model.zero_init_residual = False
  # Compute dtype of convs and matmuls. bfloat16: mixed precision; params,
  # optimizer state, norm statistics and the loss stay float32.
  config.model.dtype = 'float32'  # float32 | bfloat16
  config.model.hidden = (100, 100, 100)  # mlp only.
  config.model.activation = 'relu'  # relu | sigmoid | gelu, after every hidden layer.
  # glorot_uniform (tf.layers' default, the seed's) | normal (stddev below) |
  # he_normal (N(0, 2/fan_out), as ResNet and VGG code initializes convs).
  config.model.kernel_init = 'glorot_uniform'
  config.model.kernel_init_stddev = 0.1
  config.model.filters = (30, 50, 60)
  config.model.strides = (2, 1, 1)
  config.model.kernel_size = 3
  config.model.padding = 'VALID'
  config.model.dense = (3500, 700)
  # How convs are computed; the math is the same. im2col: one matmul over
  # the input's patches, forward and backward, much faster than XLA's convs
  # on CPU for the seed CNN (bn_study/runtime/cpu.py, docs/performance.md).
  # auto: on CPU, both timed on this model's train step at this batch size,
  # the rule's replaced only by one under 0.9x its step (cached beside the
  # compilation cache, kept in the run folder as conv_impl.json;
  # bn_study/training/conv_choice.py). The seed's cnn and mlp keep im2col on
  # CPU in float32 (measured faster, docs/performance.md); small steps, other
  # platforms and multi-process jobs: xla.
  config.model.conv_impl = 'auto'  # auto | xla | im2col
  # none | batch | ghost_batch | batch_renorm | noisy_batch | group | layer |
  # instance | frn | evonorm_b0 | evonorm_s0 (docs/normalizers.md). frn and the
  # evonorms replace the ReLU after the norm too (placement=pre_act only).
  config.model.norm = 'none'
  # Weight Standardization (Qiao et al. 2019): every conv kernel
  # standardized per output channel before use; with norm=group, BiT's
  # GN+WS.
  config.model.weight_standardization = False
  # Residual families without a normalizer (norm=none; docs/normalizers.md):
  # none | skip_init (De & Smith 2020) | fixup (Zhang et al. 2019) |
  # nf (NF-ResNets, Brock et al. 2021a, with nf_alpha).
  config.model.norm_free = 'none'
  config.model.nf_alpha = 0.2  # The paper's.
  # input: a norm at the input of every conv and dense layer, the raw image and
  #   the logits layer included (the seed; layers keep their biases).
  # pre_act: layer -> norm -> ReLU with the layer's bias dropped, since the
  #   norm's mean subtraction cancels it (Ioffe & Szegedy 2015).
  # post_act: layer -> ReLU -> norm (biases kept).
  # pre_act and post_act put no norm on the logits layer.
  config.model.placement = 'input'
  # A decay: running = momentum * running + (1 - momentum) * batch, as in Flax
  # and Keras. PyTorch's momentum is 1 - ours (its 0.1 is our 0.9).
  # 0.99 and 1e-3 are tf.layers.batch_normalization's defaults, the seed's.
  config.model.bn_momentum = 0.99
  # Running averages bias-corrected as Adam's moments (TF's
  # assign_moving_average(zero_debias=True)): right after a few steps,
  # however high bn_momentum. batch, ghost_batch, batch_renorm, noisy_batch,
  # evonorm_b0.
  config.model.zero_debias = False
  config.model.bn_epsilon = 1e-3  # Epsilon of every normalizer.
  config.model.use_scale = True  # Learned per-channel scale (gamma).
  config.model.use_bias = True  # Learned per-channel shift (beta).
  # ghost_batch: examples per ghost batch; must divide batch_size (and
  # eval_batch_size when eval_stats has `batch`).
  config.model.virtual_batch_size = 250
  # batch_renorm (Ioffe 2017): r_max and d_max are 1 and 0 until
  # renorm_warmup, then relax linearly to renorm_r_max at renorm_r_max_at and
  # renorm_d_max at renorm_d_max_at, all as fractions of the run. The paper's
  # schedule (5k, 40k, 25k steps) with its 40k mapped to the end of the run.
  config.model.renorm_r_max = 3.0
  config.model.renorm_d_max = 5.0
  config.model.renorm_warmup = 5 / 40
  config.model.renorm_r_max_at = 40 / 40
  config.model.renorm_d_max_at = 25 / 40
  config.model.renorm_momentum = 0.99
  # group and evonorm_s0: Wu & He's default is 32, which divides none of
  # the seed's widths (30, 50, 60, 3500, 700); 10 divides them all. A layer whose channels
  # num_groups does not divide uses gcd(num_groups, channels) groups.
  config.model.num_groups = 10
  # noisy_batch (Santurkar et al. 2018's "noisy BN"): BN, then each channel
  # scaled by s and shifted by m, both redrawn every training step: m ~
  # U(-noise_shift, noise_shift), log s ~ U(-log noise_scale, log noise_scale).
  config.model.noise_shift = 0.5
  config.model.noise_scale = 2.0
  # global: BN statistics over the whole global batch, on any number of
  #   devices (the default, and what jit over a mesh computes).
  # per_device: each device's shard normalized by its own statistics, as pmap
  #   without axis_name used to do; the same as ghost_batch with
  #   virtual_batch_size = batch_size / devices. Running averages stay one
  #   replicated copy either way.
  config.model.stats_scope = 'global'
  # airbench: epochs the whitening conv's bias trains before it is frozen
  # (its kernel, fit to the data, never trains).
  config.model.whiten_bias_epochs = 3

  # Population statistics for eval, any of (comma-separated):
  # ema: the running averages (logged as eval/*);
  # precise: PreciseBN (Wu & Johnson 2021), statistics recomputed over
  #   precise_bn_batches training batches with the weights frozen
  #   (eval_precise/*);
  # batch: each eval batch normalized by its own statistics (eval_batch/*).
  # tta: the running averages over test-time augmentation's views
  #   (eval_tta/*; bn_study/training/tta.py), at the run's end only:
  #   tta_level 1 the image and its mirror, 2 also each moved by a pixel
  #   (airbench's 6 views).
  config.eval_stats = 'ema'
  config.tta_level = 2
  config.precise_bn_batches = 10
  # PreciseBN leaves the checkpointed running averages alone unless this is
  # True; then they are replaced by the PreciseBN statistics after each epoch.
  config.precise_bn_replaces_ema = False

  # Instruments (bn_study/training/instruments.py): measured every `every_steps` steps
  # (0 = off) on the state before that step's update, logged at that step.
  # None changes the training trajectory.
  config.analysis = ml_collections.ConfigDict()
  config.analysis.every_steps = 0
  config.analysis.act = True  # act/: percentiles of each ReLU's input.
  config.analysis.ics = True  # ics/: Santurkar et al.'s ICS per layer.
  config.analysis.smoothness = True  # smoothness/: along the gradient.
  config.analysis.norms = True  # norms/: ||W||, ||grad||, update/||W||, gamma.
  # act/ runs on the eval split's first probe_size images, BN in train mode.
  config.analysis.probe_size = 500
  # smoothness/ steps: multiples of the learning rate along the gradient.
  config.analysis.smoothness_lr_multipliers = (0.5, 1.0, 2.0, 4.0)
  return config
