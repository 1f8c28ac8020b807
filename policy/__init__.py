"""Who may do what (casbin) and what may leave (SQL analysis, output control). Imports no other Sluice package."""
