"""Metering in the service: usage events on the run path, price schedules, bills and exports in the store."""
