"""A run from start to end: the suite planned and checked, every kernel built, verified and
measured in worker processes, the rows written as they come (runner.py). `pwbench run`, one key of
`pwbench run --fleet` and the tests all go through `runner.plan` and `runner.execute`."""
