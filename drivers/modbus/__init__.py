"""Modbus TCP: options (site.yaml), planner (points -> requests), codec (registers <-> values), driver."""

from drivers.modbus.codec import CodecError, decode, encode
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver, read_block_raw
from drivers.modbus.options import ModbusDevice, ModbusPoint
from drivers.modbus.planner import Block, ReadPlan, per_point_plan, plan

__all__ = [
    "Block",
    "CodecError",
    "EndpointPool",
    "ModbusDevice",
    "ModbusPoint",
    "ModbusTcpDriver",
    "ReadPlan",
    "decode",
    "encode",
    "per_point_plan",
    "plan",
    "read_block_raw",
]
