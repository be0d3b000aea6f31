"""Settings of the Celery worker the backfill tests start: the tests' backfills, and batches
kept small so a run lasts long enough to be killed mid-way."""

from tests.backfills.settings import *  # noqa: F401,F403

DATA_ARCH = {  # noqa: F405
    **DATA_ARCH,  # noqa: F405
    "BACKFILLS": {**DATA_ARCH["BACKFILLS"], "BATCH_SIZE": 200, "MAX_BATCH_SIZE": 200},  # noqa: F405
}
