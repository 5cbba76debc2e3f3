"""Bundled device simulators and the small building model behind them.

Independent of drivers/ and edge_agent/: its register maps are written from its own manual (MANUAL.md).
"""
