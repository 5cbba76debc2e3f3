"""Energy reports: the report model, KPIs (kgce per m² and the others), coal factors, HTML/CSV renderers."""
