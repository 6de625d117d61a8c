"""The web layer: the report endpoints, their validation and their OpenAPI document, and
the dashboard pages built on the same reports.

The only part of the package that knows HTTP or the schema library; everything it shows
comes from :mod:`tutor_times.reports.read_models`.
"""

from . import dashboard as dashboard  # registers the pages on the blueprint
from .views import bp

__all__ = ["bp"]
