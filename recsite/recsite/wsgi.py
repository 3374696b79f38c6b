"""WSGI entry point (gunicorn recsite.wsgi)."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

from recsite.bodylimit import limit_wsgi  # noqa: E402

application = limit_wsgi(get_wsgi_application())
