"""Studies: sweeps (local and Ray engines), runs, claims and reports. Nothing
here imports JAX, Flax, TensorFlow or Ray at module level, so a sweep driver
starts on a laptop or a Ray head node."""
