"""Django settings, all from the environment (12-factor) with local defaults.

Django's own database keeps accounts, sessions and admin records (SQLite locally, PostgreSQL via
``DATABASE_URL`` in production); the catalog, ratings and recommendations live in MongoDB behind
``core.mongo``. With ``DJANGO_DEBUG=0`` the secret key, hosts and mail backend must come from the
environment and the security settings that ``manage.py check --deploy`` asks for are on.
"""
from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

from core import redis_client  # noqa: E402
from core.env import env_bool, env_float, env_int, env_str  # noqa: E402
from core.settings import get_settings  # noqa: E402

CORE = get_settings()


def _comma_list(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


# Off unless asked for: a deployment that forgets the variable must not serve tracebacks. The local
# scripts (bin/demo, bin/test) set DJANGO_DEBUG=1 themselves.
DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0")
    SECRET_KEY = "local-development-only-not-secret"  # noqa: S105 - never used with DEBUG off
ALLOWED_HOSTS = _comma_list(env_str("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else ""))
if not ALLOWED_HOSTS and not DEBUG:  # else every request would be answered 400, with no hint why
    raise RuntimeError("DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG=0 (comma-separated host names)")
CSRF_TRUSTED_ORIGINS = _comma_list(env_str("DJANGO_CSRF_TRUSTED_ORIGINS", ""))
# How many proxies in front of the site append to X-Forwarded-For (0: clients connect directly, and
# every X-Forwarded-* header is the client's own, so none is trusted). One number for the login
# lockout (recsite.client_address), DRF's throttles (NUM_PROXIES) and the HTTPS header.
TRUSTED_PROXIES = max(0, env_int("DJANGO_TRUSTED_PROXIES", 0))
# ...and only from a peer in these networks (the proxy's own address): from any other, X-Forwarded-*
# headers are dropped (recsite.client_address.forwarded_headers_middleware), so a client reaching
# gunicorn directly cannot pick its address or pose as HTTPS. Default: loopback only (a proxy on
# this host); the private ranges were the default, which let any peer on a shared 10/8 name any
# address (and lock anyone out). A proxy elsewhere is named: compose sets its own network.
TRUSTED_PROXY_NETS = tuple(ipaddress.ip_network(net, strict=False) for net in _comma_list(env_str(
    "DJANGO_TRUSTED_PROXY_NETS", "127.0.0.0/8,::1/128")))
# /metrics (Prometheus) tells anyone who can read it the site's traffic by view: it answers a
# scraper sending "Authorization: Bearer METRICS_TOKEN" when that is set, else only clients on
# this host (loopback, after TRUSTED_PROXIES).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Request bodies above this are refused with 413 before anything reads them (recsite.bodylimit),
# under gunicorn and in Django; DRF parses JSON from the stream, past DATA_UPLOAD_MAX_MEMORY_SIZE.
REQUEST_MAX_BODY_BYTES = env_int("REQUEST_MAX_BODY_BYTES", 256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = REQUEST_MAX_BODY_BYTES

INSTALLED_APPS = [
    # Before django.contrib.admin: both ship registration/*.html, and the first app wins, so with
    # the admin first every password page rendered in the admin's look instead of the site's.
    "accounts",
    "accounts.adminsite.SiteAdminConfig",  # django.contrib.admin, its password change throttled
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "knox",  # API tokens (accounts.tokens); DRF's authtoken app is gone: its tokens no longer work
    "drf_spectacular",
    "shop",
]

MIDDLEWARE = [
    "recsite.metrics.metrics_middleware",  # /metrics: requests by view and status
    "recsite.bodylimit.body_limit_middleware",
    "recsite.client_address.forwarded_headers_middleware",  # before anything reads X-Forwarded-*
    "recsite.health.loopback_health_middleware",  # /healthz from this host: no host check, no redirect
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "recsite.apipaths.trailing_slash_middleware",  # /api/x routed as /api/x/, not redirected
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.credential_refusal_middleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "shop.middleware.outage_middleware",  # MongoDB/Kafka down: 503 with Retry-After, not 500
]

ROOT_URLCONF = "recsite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = "recsite.wsgi.application"


# dj-database-url's conventions: sqlite:///relative/path, sqlite:////absolute/path, postgres://...
DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{CORE.local_dir / 'recsite.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"]["CONN_MAX_AGE"] = 60
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Each rating's submission record is a commit. SQLite's rollback journal with synchronous=FULL
    # syncs several times per commit (0.8 ms here, against 0.02 ms in WAL with NORMAL, where only
    # checkpoints sync), and its commits wait for every reader; in WAL readers do not block the
    # writer. A power cut may lose the last commits: the rating is already in Kafka, and a retry
    # with its key publishes the same event id, which a worker stores once. A transaction begun
    # deferred that reads, then writes (update_or_create), fails at once ("database is locked", in
    # either journal mode) if another connection writes meanwhile; begun IMMEDIATE, it takes the
    # write lock first, and others wait their turn (up to the 5 s busy timeout).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", transaction_mode="IMMEDIATE")

_CACHE = {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": env_str("DJANGO_CACHE_URL", CORE.redis_url),
    "KEY_PREFIX": env_str("DJANGO_CACHE_PREFIX", CORE.mongo_db),
}
CACHES = {
    "default": {**_CACHE, "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": redis_client.CACHE_TIMEOUT_S,
                                      "SOCKET_TIMEOUT": redis_client.CACHE_TIMEOUT_S,
                                      # The cache speeds pages up; a Redis outage must not take the site down.
                                      "IGNORE_EXCEPTIONS": True}},
    # The same Redis for the credential lockout and the rate limits, but errors raise: with Redis
    # down no failure would be counted, so credential checks are refused instead (accounts.throttle)
    # and the rate limits count per process (shop.throttles).
    "throttle": {**_CACHE, "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": redis_client.THROTTLE_TIMEOUT_S,
                                       "SOCKET_TIMEOUT": redis_client.THROTTLE_TIMEOUT_S,
                                       "IGNORE_EXCEPTIONS": False}},
}
DJANGO_REDIS_IGNORE_EXCEPTIONS = True
# Sessions read from the cache (Redis) and written through to the database, so a Redis restart
# logs nobody out; reading them from the database was a query on every request.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
AUTHENTICATION_BACKENDS = ["accounts.backends.ProfileBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "accounts.validators.MaximumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "recommendations"
LOGOUT_REDIRECT_URL = "catalog"
# One lockout for every endpoint that checks a password (site login, admin, /api/token/, password
# change, account deletion), counted within LOGIN_THROTTLE_WINDOW seconds: failures per (username,
# client address), per client address over all usernames, and per password over all usernames and
# addresses (password spraying).
LOGIN_THROTTLE_ATTEMPTS = env_int("LOGIN_THROTTLE_ATTEMPTS", 5)
LOGIN_THROTTLE_ADDRESS_ATTEMPTS = env_int("LOGIN_THROTTLE_ADDRESS_ATTEMPTS", 50)
LOGIN_THROTTLE_PASSWORD_ATTEMPTS = env_int("LOGIN_THROTTLE_PASSWORD_ATTEMPTS", 20)
LOGIN_THROTTLE_WINDOW = env_int("LOGIN_THROTTLE_WINDOW", 300, minimum=1)
# Seconds an attempt past a limit only because of attempts still being checked waits for them to
# turn out right or wrong before it is refused (accounts.throttle): about one password hash on a
# busy site. Past a limit of finished failures an attempt is refused at once. At most 10: a wait
# holds a worker, and a hash that takes longer means the site is down already.
LOGIN_THROTTLE_WAIT = min(env_float("LOGIN_THROTTLE_WAIT", 3.0, minimum=0.0), 10.0)
# Sign-ups and password-reset requests per client address within ACCOUNT_THROTTLE_WINDOW seconds
# (no bulk accounts, no mail bombing from one address); then 429.
ACCOUNT_THROTTLE_ATTEMPTS = env_int("ACCOUNT_THROTTLE_ATTEMPTS", 5)
ACCOUNT_THROTTLE_WINDOW = env_int("ACCOUNT_THROTTLE_WINDOW", 3600)
# Password-reset mails to one mailbox within that window, whoever asks: past it the form still
# answers "done" but sends nothing (a refusal would let anyone lock the owner out of resetting).
PASSWORD_RESET_MAILS_PER_EMAIL = env_int("PASSWORD_RESET_MAILS_PER_EMAIL", 10)
# An address given at sign-up is only pending until its owner opens the link mailed to it
# (accounts.confirmation): the link works this many seconds. A sign-up's first mail always goes
# (sign-ups are counted per client address); "send the link again" is limited per account
# (EMAIL_CONFIRM_RESENDS_PER_ACCOUNT) and per client address (ACCOUNT_THROTTLE_ATTEMPTS), and one
# mailbox gets at most EMAIL_CONFIRM_MAILS_PER_EMAIL such mails, all within ACCOUNT_THROTTLE_WINDOW
# (and as many, counted apart, telling its owner that a sign-up gave an address their account has).
EMAIL_CONFIRM_TTL = env_int("EMAIL_CONFIRM_TTL", 259200, minimum=1)
EMAIL_CONFIRM_MAILS_PER_EMAIL = env_int("EMAIL_CONFIRM_MAILS_PER_EMAIL", 5)
EMAIL_CONFIRM_RESENDS_PER_ACCOUNT = env_int("EMAIL_CONFIRM_RESENDS_PER_ACCOUNT", 3)
# API tokens (knox: one per sign-in, stored hashed) stop working this many seconds after they were
# issued; /api/token/ issues a new one for the password at any time. A password change or reset
# revokes all of an account's tokens at once (accounts.tokens).
API_TOKEN_TTL = env_int("API_TOKEN_TTL", 7 * 86400)
# Live tokens per account (devices signed in): /api/token/ refuses another with 403 token_limit,
# so a script with the password cannot fill the table (accounts.api).
API_TOKEN_LIMIT = env_int("API_TOKEN_LIMIT", 20, minimum=1)
# Knox's own settings, for what it reads itself (AuthToken.objects.create's default expiry; the
# "Token" header prefix is its default, as DRF's). The site's views read the two above directly
# (the limit only there: accounts.api checks it, with the site's error body):
# knox reads these once, at import, and override_settings would not reach its modules.
REST_KNOX = {"TOKEN_TTL": timedelta(seconds=API_TOKEN_TTL), "AUTH_HEADER_PREFIX": "Token", "AUTO_REFRESH": False}
# Ratings and controls per user, the product page, onboarding and the API together
# (shop.throttles.RatingRateThrottle).
RATING_RATE = env_str("RATING_RATE", "30/min")
# Searches allowed per signed-in user or visitor address (page and API together), DRF rate syntax.
SEARCH_RATE = env_str("SEARCH_RATE", "120/min")

# Password-reset and address-confirmation mail. With DEBUG off a backend must be named, as the
# secret key must: the console backend would "send" every link into the log, and no one could
# confirm an address or reset a password, with nothing to say so. The SMTP backend's server and
# login come from the environment too.
EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "")
if not EMAIL_BACKEND:
    if not DEBUG:
        raise RuntimeError("DJANGO_EMAIL_BACKEND must be set when DJANGO_DEBUG=0 (e.g. "
                           "django.core.mail.backends.smtp.EmailBackend with DJANGO_EMAIL_HOST)")
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
EMAIL_HOST = env_str("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("DJANGO_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("DJANGO_EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("DJANGO_EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("DJANGO_EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "recommender@localhost")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(CORE.local_dir / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage" if not DEBUG
                    else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    # Token first: DRF takes the WWW-Authenticate challenge from the first class, so a missing or
    # bad token gets 401 (with "WWW-Authenticate: Token"); session first would answer 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.tokens.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    # DRF's defaults, with a JSON parser that answers a too deeply nested body 400, not 500.
    "DEFAULT_PARSER_CLASSES": ["recsite.parsers.JSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # every error as {"detail", "code"} (+ "fields"), not DRF's three shapes (README, "API")
    "EXCEPTION_HANDLER": "recsite.api_errors.exception_handler",
    # DRF's UserRateThrottle, counting a visitor per address as the other limits do (an IPv6 one per /64)
    "DEFAULT_THROTTLE_CLASSES": ["shop.throttles.ApiRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": env_str("API_USER_RATE", "6000/min")},
    # Without it DRF keys anonymous throttles on the whole X-Forwarded-For, which clients write.
    "NUM_PROXIES": TRUSTED_PROXIES,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "amazon-recommender API",
    "DESCRIPTION": "Recommendations, similar items and ratings. Session or token authentication.",
    "VERSION": "1",
    # drf-spectacular's default hook, then 413/429/500/503 on every operation (recsite.api_errors)
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "recsite.api_errors.add_any_endpoint_errors"],
}

if TRUSTED_PROXIES:  # only a proxy we trust may say the client used HTTPS
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A load balancer polls /healthz over plain HTTP: redirected to HTTPS it never learnt whether the
# site works (a poll from this host is answered earlier still: recsite.health).
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"kafka": {"level": "WARNING"}},
}
