"""CJ/T 188 water, heat and gas meters on RS-485 (often through an M-Bus converter). So far the pure codec."""
