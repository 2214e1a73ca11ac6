"""How the platform computes, not what: the device mesh, the compilation
cache, CPU tuning and the process setup the entry points call."""
