"""The test settings, serving tests/multiprocess_urls.py on every host."""

from tests.settings import *  # noqa: F401,F403

ROOT_URLCONF = PUBLIC_SCHEMA_URLCONF = "tests.multiprocess_urls"
ALLOWED_HOSTS = ["*"]
