"""Bridges: a weight-sparse model coupled to a frozen dense one (SPEC section 9).

`core.py` the bridges and the training objective; `run.py` bridged runs (train, load);
`steer.py` steering the dense model through a sparse channel, and circuits read through the bridge.
"""

from .core import BridgeConfig, Bridged, Bridges, bridge_quality  # noqa: F401
from .run import BridgedPair, train_bridged  # noqa: F401
