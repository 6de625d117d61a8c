"""The web layer: the report endpoints, their validation and their OpenAPI document, and
the dashboard pages built on the same reports.

The only part of the package that knows HTTP or the schema library; everything it shows
comes from :mod:`tutor_times.reports`.
"""

# each registers its endpoints or pages on the blueprint
from . import activities, dashboard, meta, reports
from .views import bp

__all__ = ["activities", "bp", "dashboard", "meta", "reports"]
