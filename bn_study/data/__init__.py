"""Data: TFDS + tf.data, image folders, the splits on the devices, the epoch
order both paths follow, and which feed a run gets."""
