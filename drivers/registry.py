"""Protocol name -> options models, driver factory, protocol-specific site checks.

The shell looks protocols up here and nowhere else: ``edge_agent.config`` composes the site schema's
``devices:`` union and site-wide options (``bacnet:``) from ``PROTOCOLS``, and the agent builds drivers
through it. Adding a protocol is a new folder under ``drivers/`` with a ``spec.py`` and one entry in
``_BUILT_IN`` below; ``register`` adds one at run time (tests, plug-ins).

Importing this module imports the options models only, not the protocol stacks: factories import
their driver modules when first called, so ``edge-agent check`` stays quick.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from drivers.bacnet.spec import SPEC as BACNET
from drivers.cjt188.spec import SPEC as CJT188
from drivers.dlt645.spec import SPEC as DLT645
from drivers.modbus.spec import SPEC as MODBUS
from drivers.modbus.spec import SPEC_RTU as MODBUS_RTU
from drivers.spec import ProtocolSpec

__all__ = ["PROTOCOLS", "ProtocolSpec", "register", "unregister"]

# In this order in the site schema's `devices:` union (and so in "expected one of ..." messages).
_BUILT_IN: tuple[ProtocolSpec, ...] = (MODBUS, MODBUS_RTU, BACNET, DLT645, CJT188)

_registry: dict[str, ProtocolSpec] = {}
PROTOCOLS: Mapping[str, ProtocolSpec] = MappingProxyType(_registry)  # read-only view, in registration order


def register(spec: ProtocolSpec) -> None:
    """Add a protocol. ValueError if its name or its site-wide options key is taken."""
    if spec.name in _registry:
        raise ValueError(f"protocol {spec.name!r} is already registered")
    if spec.network_key is not None:
        for other in _registry.values():
            if other.network_key == spec.network_key:
                owner = other.name
                raise ValueError(f"site.yaml key {spec.network_key!r} already belongs to protocol {owner!r}")
    _registry[spec.name] = spec


def unregister(name: str) -> ProtocolSpec:
    """Remove a protocol and return its spec. KeyError if it is not registered."""
    return _registry.pop(name)


for _spec in _BUILT_IN:
    register(_spec)
