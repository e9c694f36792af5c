"""The composition root: each process dtq runs (server, manager, worker),
built from settings. The only place that picks adapters for ports."""
