"""Entry point of the demo LMS: ``flask --app wsgi run`` or ``gunicorn wsgi:app``."""

from demo import create_app

app = create_app()
