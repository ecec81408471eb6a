"""The data stage: corpus -> documents -> by-file split -> tokenizer -> token arrays.

`prepare.py` reads real code and writes data directories; `synthetic.py` generates simple
Python programs that can be mixed in.
"""

from .meta import DataMeta  # noqa: F401
from .prepare import *  # noqa: F401,F403
