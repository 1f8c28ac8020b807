"""Usage events, meters, price schedules and caps, bills, exports and Prometheus metrics."""
