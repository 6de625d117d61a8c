"""The rules themselves: time arithmetic, names, settings' keys, errors and metrics, with no
Flask, SQL or Redis."""
