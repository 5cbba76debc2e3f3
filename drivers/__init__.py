"""Protocol adapters behind drivers.base.Driver. Imports neither edge_agent nor policies."""
