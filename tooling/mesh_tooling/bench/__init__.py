"""Benchmarks (``mesh bench …``): each reports its figures next to a baseline measured in
the same run, since absolute numbers on a shared machine mean little."""
