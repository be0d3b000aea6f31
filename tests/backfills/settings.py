"""Settings of the ``manage.py backfill`` processes the tests start: the test settings, plus the
module that registers the tests' backfills."""

from tests.settings import *  # noqa: F401,F403

DATA_ARCH = {**DATA_ARCH, "BACKFILLS": {"MODULES": ["tests.backfills.definitions"]}}  # noqa: F405
