"""Reliability and security suites for modelgate: adversarial input, faults, reload, soak."""
