"""The Python API: ``privfl.run(config)`` and ``privfl.resume(run_dir)``.

The driver itself is :mod:`privfl.driver`, so that the suites (below the API in the import
layers of pyproject.toml) run their cells through it too.
"""

from privfl.driver import resume, run, wants_privacy_report

__all__ = ["resume", "run", "wants_privacy_report"]
