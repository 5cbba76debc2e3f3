"""DL/T 645-2007 electricity meters on RS-485: pure codec (codec.py), options, driver, registry spec."""
