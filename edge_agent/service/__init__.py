"""The running service: poll loops (agent.py) and the wiring of every part, SIGHUP reload and shutdown
(service.py)."""
