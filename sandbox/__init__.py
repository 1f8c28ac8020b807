"""The Sluice service: API, console, CLI, settings, control store, catalogue, jobs and the locked executor."""
