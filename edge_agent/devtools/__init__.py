"""Tools for trying and measuring the agent: the demo, the benchmarks and the simulator wiring they share."""
