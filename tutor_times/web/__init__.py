"""The web layer: the report endpoints, their validation and their OpenAPI document.

The only part of the package that knows HTTP or the schema library; everything it shows
comes from :mod:`tutor_times.reports`.
"""

from .views import bp

__all__ = ["bp"]
