"""privfl: privacy research toolkit for federated learning.

>>> import privfl
>>> cfg = privfl.Config(name="demo", federation={"rounds": 2})
>>> result = privfl.run(cfg, out=None, progress=False)
>>> len(result.metrics)
2
"""

from privfl.api import resume, run
from privfl.config import Config, load_config
from privfl.errors import ConfigError, DataError, PrivflError
from privfl.federation import Federation, RunResult

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "Federation",
    "PrivflError",
    "RunResult",
    "load_config",
    "resume",
    "run",
]
