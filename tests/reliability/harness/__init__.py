"""Support code for the reliability suites: raw HTTP, a recording upstream, the host process,
configs, tokens and a load generator."""
