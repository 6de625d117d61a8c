"""Sessions idle past the window are closed with exact end times (R3), by the sweep in the
worker or in the app, and old rows are purged (retention)."""
