"""bn_study: what Batch Normalization does in image classifiers, in JAX/Flax."""
