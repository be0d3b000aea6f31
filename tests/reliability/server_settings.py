"""The example project as a scenario's web server runs it: its own settings, with the
``DATABASES`` (and router/tenancy overrides) the scenario passes as JSON in the environment."""

import json
import os

from example_project.settings import *  # noqa: F401,F403

DATABASES = json.loads(os.environ["RELIABILITY_DATABASES"])
DATA_ARCH = dict(DATA_ARCH)  # noqa: F405
for _section, _values in json.loads(os.environ.get("RELIABILITY_DATA_ARCH", "{}")).items():
    DATA_ARCH[_section] = {**DATA_ARCH.get(_section, {}), **_values}
# The test settings' row-level models, so writes invalidate in this process too.
DATA_ARCH["CACHE"] = {
    "ALIAS": "default", "MODELS": ["billing.Invoice", "billing.Contact", "auth.User"],
    **DATA_ARCH.get("CACHE", {}),
}
DEBUG = False
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "data_arch": {"handlers": ["console"], "level": "INFO"},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}
