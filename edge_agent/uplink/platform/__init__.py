"""The municipal energy-monitoring platform uplink (MOHURD data transmission protocol)."""
