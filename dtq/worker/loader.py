"""Load handler modules named on the command line."""

from __future__ import annotations

import importlib

from dtq.worker.app import App


class LoadError(Exception):
    """A module could not be loaded or has no handlers."""


def load(specs: list[str]) -> App:
    """Merge the Apps of modules `pkg.mod` or `pkg.mod:attr` into one."""
    merged = App("worker")
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise LoadError(f"cannot import {module_name!r}: {error}") from error
        if attr:
            app = getattr(module, attr, None)
            if not isinstance(app, App):
                raise LoadError(f"{spec!r} is not a dtq App")
            apps = [app]
        else:
            apps = [v for v in vars(module).values() if isinstance(v, App)]
        if not apps or not any(a.handlers for a in apps):
            raise LoadError(f"{spec!r} registers no task handlers (expected an App with @app.task)")
        for app in apps:
            merged.merge(app)
    return merged
