"""VA Fleet settings.

Everything comes from the environment; the defaults are the embedded, one-machine
configuration (SQLite in WAL mode, django-q2's ORM broker, a database channel layer).
Setting VAFLEET_DATABASE_URL and VAFLEET_REDIS_URL gives the scale-out configuration.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from vaproject.envconf import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAFLEET_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _file_secret(path: Path, length: int = 50) -> str:
    """A generated secret kept in a file outside the database (embedded default)."""
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(length))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("VAFLEET_DEBUG", False)
SECRET_KEY = env_str("VAFLEET_DJANGO_SECRET") or _file_secret(VAR_DIR / "django-secret")
# Key for secrets at rest (hypervisor, appliance and repository passwords): never in the database.
VAFLEET_SECRETS_KEY = env_str("VAFLEET_SECRETS_KEY")
VAFLEET_SECRETS_KEY_PATH = VAR_DIR / "secrets.key"

ALLOWED_HOSTS = env_list("VAFLEET_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("VAFLEET_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_q",
    "channels",
    "core",
    "inventory",
    "appliances",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "core.middleware.AuditContextMiddleware",
]

ROOT_URLCONF = "vaproject.urls"
ASGI_APPLICATION = "vaproject.asgi.application"
WSGI_APPLICATION = "vaproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.role",
            ],
        },
    },
]


def _database(url: str) -> dict:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "vafleet.sqlite3",
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
        }
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"VAFLEET_DATABASE_URL: unsupported scheme {parsed.scheme!r}; use postgresql://")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.path.lstrip("/"),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


DATABASE_URL = env_str("VAFLEET_DATABASE_URL")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("VAFLEET_REDIS_URL")
# Names this installation's keys in Redis (queue and channels), so installations can share one server.
REDIS_PREFIX = env_str("VAFLEET_REDIS_PREFIX", "vafleet")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # No socket timeout (redis-py 8 sets 5 s): channels_redis waits with a 5 s BZPOPMIN, which a 5 s
            # read timeout races on a loaded machine, dropping the websocket (redis/redis-py#4091); and any
            # timeout makes redis-py write through asyncio.wait_for, which on Python 3.11 can swallow a
            # cancel, leaving a closed socket's receive looping forever. Keepalive finds a dead peer.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None, "socket_keepalive": True}],
                       "prefix": f"{REDIS_PREFIX}:asgi"},
        }
    }
else:
    # Works across processes (web and workers) with no service: messages go through the database.
    CHANNEL_LAYERS = {"default": {"BACKEND": "core.channel_layer.DatabaseChannelLayer"}}

Q_CLUSTER = {
    "name": REDIS_PREFIX,
    "workers": env_int("VAFLEET_WORKERS", 2),
    "timeout": env_int("VAFLEET_TASK_TIMEOUT", 86400),  # a backup run is one task: up to a day
    "retry": env_int("VAFLEET_TASK_RETRY", 90000),  # above timeout: never redelivered while running
    "max_attempts": 1,
    "catch_up": False,
    "label": "Background tasks",
    "poll": 0.5,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
Q_CLUSTER["sync"] = env_bool("VAFLEET_TASKS_SYNC", False)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("VAFLEET_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.permissions.RolePermission"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "VA Fleet API",
    "DESCRIPTION": "Image-based backup, replication and recovery of VMware VMs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Docs assets served by this server: the docs work offline, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Bounded timeouts for hypervisor connections (seconds).
VAFLEET_CONNECT_TIMEOUT = env_int("VAFLEET_CONNECT_TIMEOUT", 10)
VAFLEET_HEALTH_MINUTES = env_int("VAFLEET_HEALTH_MINUTES", 5)
# How long a new appliance may take to boot and answer on SSH.
VAFLEET_APPLIANCE_BOOT_SECONDS = env_int("VAFLEET_APPLIANCE_BOOT_SECONDS", 300)
# Backup tasks running at once, across every job, on one ESXi host / datastore / repository.
VAFLEET_LIMIT_PER_HOST = env_int("VAFLEET_LIMIT_PER_HOST", 4)
VAFLEET_LIMIT_PER_DATASTORE = env_int("VAFLEET_LIMIT_PER_DATASTORE", 4)
VAFLEET_LIMIT_PER_REPOSITORY = env_int("VAFLEET_LIMIT_PER_REPOSITORY", 8)
# A VM is protected when it has a restore point taken within this many hours (the dashboard, the VM list).
VAFLEET_RPO_HOURS = env_int("VAFLEET_RPO_HOURS", 48)
VAFLEET_LAB_ROOT = Path(env_str("VAFLEET_LAB_ROOT", str(VAR_DIR / "lab"))).resolve()

# E-mail (run notifications, daily summaries). Without an SMTP host, each mail is written as a file in var/mail.
EMAIL_HOST = env_str("VAFLEET_SMTP_HOST")
EMAIL_USE_TLS = env_bool("VAFLEET_SMTP_TLS", False)  # STARTTLS
EMAIL_USE_SSL = env_bool("VAFLEET_SMTP_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ValueError("VAFLEET_SMTP_TLS and VAFLEET_SMTP_SSL exclude each other: set TLS for STARTTLS (usually port "
                     "587) or SSL for TLS from the start (usually port 465), not both.")
EMAIL_PORT = env_int("VAFLEET_SMTP_PORT", 465 if EMAIL_USE_SSL else 587 if EMAIL_USE_TLS else 25)
EMAIL_HOST_USER = env_str("VAFLEET_SMTP_USER")
EMAIL_HOST_PASSWORD = env_str("VAFLEET_SMTP_PASSWORD")
EMAIL_TIMEOUT = env_int("VAFLEET_SMTP_TIMEOUT", 20)
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = VAR_DIR / "mail"
DEFAULT_FROM_EMAIL = SERVER_EMAIL = env_str("VAFLEET_MAIL_FROM", "VA Fleet <vafleet@localhost>")
# Absolute links in e-mails point here.
VAFLEET_PORTAL_URL = env_str("VAFLEET_PORTAL_URL", "http://127.0.0.1:8000").rstrip("/")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("VAFLEET_LOG_LEVEL", "INFO")},
    "loggers": {
        "django_q": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
