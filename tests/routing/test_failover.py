import time

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from data_arch.routing import routing_context
from tests.routing.conftest import ROUTED

pytestmark = ROUTED


@pytest.mark.slow
def test_stopping_the_replica_mid_run_fails_no_read(user_on_replica, data_arch_services):
    replica = data_arch_services.replica
    served, failures = [], []
    with override_settings(DATA_ARCH={"ROUTER": {"REPLICAS": ["replica"], "HEALTH_TTL": 0.2}}):
        try:
            for i in range(60):
                if i == 20:
                    replica.stop("immediate")
                with routing_context():
                    try:
                        served.append(User.objects.get(username="replayed")._state.db)
                    except Exception as exc:  # any failed read is what this test forbids
                        failures.append(repr(exc))
            assert failures == []
            assert served[:20] == ["replica"] * 20
            # Read 20 ran on the dead connection and was retried on the primary (its instance
            # still says "replica": Django labels it with the alias the query was routed to).
            assert set(served[21:]) == {"default"}
            replica.start()
            back = None
            for _ in range(500):  # bounded: until a probe sees it healthy again
                with routing_context():
                    back = User.objects.get(username="replayed")._state.db
                if back == "replica":
                    break
                time.sleep(0.05)
            assert back == "replica"
        finally:
            if not replica.running:
                replica.start()
