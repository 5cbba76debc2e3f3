"""Operating the service: sd_notify and the watchdog health, the status socket, the Prometheus page."""
