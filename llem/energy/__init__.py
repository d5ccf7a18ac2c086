"""Energy meters, the power sampler and the measurement window."""
