"""CJ/T 188 water, heat and gas meters on RS-485 (often through an M-Bus converter): pure codec
(codec.py), options, driver, registry spec."""
