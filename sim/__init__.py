"""Bundled device simulators and the small building model behind them.

Independent of drivers/ and edge_agent/: its register maps are written from its own manual (MANUAL.md).

Modules:
- ``sim.building``: the protocol-free building model (weather, rooms, AC units, lights, meters, occupant
  script), stepped with explicit sim times; front ends use its attributes, setters and ``subscribe``.
- ``sim.modbus_server``: a small asyncio Modbus TCP server (``ModbusServer``, ``UnitBank``).
- ``sim.modbus_map``: the building's register map (``REGISTER_MAP``) and its Modbus front end.
- ``sim.typebank``: unit 99, one known value for every data type and layout (``ENTRIES``).
- ``sim.bench``: benchmark units 100+.
- ``sim.encoding``: the struct-based register encoder the simulator uses.
- ``sim.runner``: ``Simulator`` (model + server + stepping task) and the ``edge-agent sim`` command.
"""
