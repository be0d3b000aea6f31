import pytest

from data_arch.routing import reset_health, routing_context

ROUTED = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture(autouse=True)
def fresh_routing():
    """Each test starts with no remembered writes and fresh replica health."""
    reset_health()
    with routing_context():
        yield
    reset_health()


@pytest.fixture
def user_on_replica(streaming_replica, wait_for_replica):
    """A user that exists on the primary and has been replayed on the replica."""
    from django.contrib.auth.models import User

    user = User.objects.create(username="replayed")
    wait_for_replica()
    return user
