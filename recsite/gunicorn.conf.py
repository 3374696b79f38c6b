"""gunicorn's settings for the site, wherever it runs: ``bin/services start web``
(services/programs.py), the compose file's ``web`` service and the image's own CMD
(docker/Dockerfile) all start ``gunicorn -c <this file> --bind ADDRESS`` and say nothing else.

One file because the three command lines drifted apart: production ran single-thread workers while
the measured local setup ran 3 x 4 threads, and the image run alone took 127.0.0.1's
X-Forwarded-Proto for HTTPS. tests/unit/test_gunicorn_config.py holds the three to this file.

gunicorn runs it (a Python file) before it imports the site; its knobs are read through core.env
like every other, so ``WEB_WORKERS=three`` stops gunicorn naming the variable. ``GUNICORN_CMD_ARGS``
and the command line still override it (bench/site_load.py adds an access-log format that way).
"""
from pathlib import Path

from core.env import env_int

wsgi_app = "recsite.wsgi"
chdir = str(Path(__file__).resolve().parent)  # the Django project folder, as manage.py runs it

workers = env_int("WEB_WORKERS", 3, minimum=1)
threads = env_int("WEB_THREADS", 4, minimum=1)  # a thread mostly waits on MongoDB and Redis: docs/benchmarks.md measured 3 x 4
graceful_timeout = 10  # a stop or reload waits this long for requests in flight, then kills the worker
accesslog = "-"

# The request line and headers are capped here (gunicorn's own defaults, stated); bodies by
# recsite.bodylimit.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# gunicorn trusts nobody's X-Forwarded-Proto: by default it took 127.0.0.1's as HTTPS, past
# DJANGO_TRUSTED_PROXIES=0. The site decides (SECURE_PROXY_SSL_HEADER, from a peer in
# DJANGO_TRUSTED_PROXY_NETS only: recsite.client_address).
forwarded_allow_ips = ""
