"""The harness core: configs, workloads, agents, the runner, metrics and result files."""
