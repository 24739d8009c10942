"""Real servers the tests and benchmarks start on loopback (the vCenter simulator, ...)."""
