"""Activities from before tracking: sources (CSV, OnTrack's logs and tables), row checks,
placement by R2 and the importer; rebuilding a unit's sessions under new settings."""
