"""ASGI entry point, for servers that speak ASGI. The site runs under gunicorn (WSGI, ``recsite.wsgi``),
where ``recsite.bodylimit`` refuses big bodies before they are read; an ASGI server must set its own limit."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsite.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
