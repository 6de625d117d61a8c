"""The demo's extension instances, bound to the app in ``create_app``."""

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from tutor_times import TutorTimes, include_migrations

db = SQLAlchemy()
login_manager = LoginManager()
migrate = Migrate()
migrate.configure(include_migrations)
tutor_times = TutorTimes(db=db)
