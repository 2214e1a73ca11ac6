"""Tools: the benchmark."""
