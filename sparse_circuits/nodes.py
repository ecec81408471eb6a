"""What a node is: one channel at one of the eight node locations of one layer; and what every
hook site is called.

Every other module names nodes and sites through these types: a `NodeLocation` knows where it sits
in the block (forward order, whether it reads or writes the residual stream, whether it is a
per-head channel); a `SiteName` is the name of any hook site (a node site `"{layer}.{location}"`,
a residual point `"{layer}.resid_pre"`, a norm's scale `"{layer}.ln_1.scale"`); and a `NodeId` is
one channel of one node site, written `"{layer}.{location}:{index}"` (e.g. `"0.attn.v:21"`)
wherever it is stored. Which weight connects which locations is declared by the block
(`model.Block.WIRING`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import UserError


class NodeLocation(str, enum.Enum):
    """The eight node locations of a block, in forward order; the value is the hook-site suffix after `L.`."""

    ATTN_IN = "attn.act_in"
    ATTN_Q = "attn.q"
    ATTN_K = "attn.k"
    ATTN_V = "attn.v"
    ATTN_OUT = "attn.resid_delta"
    MLP_IN = "mlp.act_in"
    MLP_NEURON = "mlp.post_act"
    MLP_OUT = "mlp.resid_delta"

    @property
    def order(self) -> int:
        """Position in the block's forward pass (0 = the attention input)."""
        return list(NodeLocation).index(self)

    @property
    def reads_residual(self) -> bool:
        """A block input: the (normalised) residual stream, one node per residual channel."""
        return self in (NodeLocation.ATTN_IN, NodeLocation.MLP_IN)

    @property
    def writes_residual(self) -> bool:
        """A block output: added to the residual stream, one node per residual channel."""
        return self in (NodeLocation.ATTN_OUT, NodeLocation.MLP_OUT)

    @property
    def head_channel(self) -> bool:
        """Query, key or value: channel c belongs to head c // d_head."""
        return self in (NodeLocation.ATTN_Q, NodeLocation.ATTN_K, NodeLocation.ATTN_V)


class SiteKind(str, enum.Enum):
    """What passes through a hook site."""

    NODE = "node"  # one of the eight node locations: its channels are the circuit's nodes
    NORM_SCALE = "norm_scale"  # a norm's per-token 1/rms factor (width 1), frozen by pruning's option
    RESIDUAL = "residual"  # the residual stream before an attention or MLP block (bridges read and write it)


class ResidualPoint(str, enum.Enum):
    """Where a residual site reads the stream in its layer."""

    PRE = "resid_pre"  # before the block's attention (0.resid_pre: the embeddings)
    MID = "resid_mid"  # between the block's attention and its MLP


class SiteName(str):
    """The name of a hook site of any kind. A str, so that hooks, masks, means and stored records key
    by it as before; made only through its constructors, so that every name has one spelling."""

    @classmethod
    def node(cls, layer: int, location: NodeLocation) -> SiteName:
        """`"0.attn.q"`."""
        return cls(f"{layer}.{location.value}")

    @classmethod
    def residual(cls, layer: int, point: ResidualPoint) -> SiteName:
        """`"1.resid_mid"`."""
        return cls(f"{layer}.{point.value}")

    @classmethod
    def norm_scale(cls, norm: str) -> SiteName:
        """`"0.ln_1.scale"`, `"ln_f.scale"`: the 1/rms factor of the norm named `norm`."""
        return cls(f"{norm}.scale")

    @property
    def kind(self) -> SiteKind:
        if self.endswith(".scale"):
            return SiteKind.NORM_SCALE
        if self.rpartition(".")[2] in {p.value for p in ResidualPoint}:
            return SiteKind.RESIDUAL
        return SiteKind.NODE


def site_name(layer: int, location: NodeLocation) -> SiteName:
    """The hook-site name of a node location in a layer: `"0.attn.q"`."""
    return SiteName.node(layer, location)


def parse_site(name: str) -> tuple[int, NodeLocation]:
    """(layer, location) of a node site name; a one-line error for anything else."""
    layer, _, loc = name.partition(".")
    try:
        return int(layer), NodeLocation(loc)
    except ValueError:
        raise UserError(f"{name!r} is not a node site; node sites look like '0.attn.q' or '1.mlp.post_act' "
                        f"(locations: {', '.join(l.value for l in NodeLocation)})") from None


@dataclass(frozen=True)
class NodeId:
    """One node: channel `index` at `location` of block `layer`. Sorts in forward order."""

    layer: int
    location: NodeLocation
    index: int

    @classmethod
    def at(cls, site: str, index: int) -> "NodeId":
        layer, location = parse_site(site)
        return cls(layer, location, index)

    @classmethod
    def parse(cls, text: str) -> "NodeId":
        """The inverse of `str(node)`: `"0.attn.v:21"`."""
        site, sep, index = text.rpartition(":")
        if not sep or not index.isdigit():
            raise UserError(f"{text!r} is not a node; nodes look like '0.attn.v:21' (site:channel)")
        return cls.at(site, int(index))

    @property
    def site(self) -> SiteName:
        return SiteName.node(self.layer, self.location)

    def sort_key(self) -> tuple[int, int, int]:
        return self.layer, self.location.order, self.index

    def __lt__(self, other: "NodeId") -> bool:
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        return f"{self.site}:{self.index}"
