"""Enforcement: the loop that runs policies on the snapshot, and the actuator, the safety envelope every write
passes through."""
