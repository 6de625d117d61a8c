"""The app's wiring: settings, each app's state, the host's hooks, maintenance, health and the
``flask tutor-times`` commands."""
