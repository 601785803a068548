"""The training engine: one epoch loop for every dataset, size and number of processes (``engine.run.run``).

Nothing is imported here: the loaders import ``engine.preemption``, and ``engine.run`` imports the loaders.
"""
