"""Every option of every action given a bad value: a CommandError naming the option, before
anything is read or changed."""

import pytest
from django.core.management import CommandError, call_command

from tests.partitioning.conftest import partitions

BAD = [
    (["--ahead", "-1"], "--ahead"),
    (["--ahead", "1201"], "--ahead"),
    (["--ahead", "x"], "--ahead"),
    (["--ahead", "99999999999999999999"], "--ahead"),
    (["--retain", "0"], "--retain"),
    (["--retain", "-5"], "--retain"),
    (["--retain", "1.5"], "--retain"),
    (["--retain", "99999999999999999999"], "--retain"),
    (["--database", "nope"], "--database"),
    (["--database", ""], "--database"),
    (["--tenant", ""], "--tenant"),
    (["--tenant", "nobody"], "--tenant"),
    (["--tenant", "bad;name"], "--tenant"),
    (["--tenant", "tenant_a", "--all-tenants"], "--all-tenants"),
    (["--model", ""], "--model"),
    (["--model", "nope"], "--model"),
    (["--model", "shop.Nope"], "--model"),
    (["--model", "shop.Order"], "--model"),
    (["--model", "a.b.c"], "--model"),
    (["--format", "xml"], "--format"),
]


@pytest.mark.parametrize("action", ["status", "plan", "apply"])
@pytest.mark.parametrize("argv, option", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_value_is_a_command_error_naming_the_option(events, action, argv, option):
    extra = ["--yes"] if action == "apply" else []
    with pytest.raises(CommandError) as error:
        call_command("partitions", action, *argv, *extra)
    assert option in str(error.value)
    assert len(partitions()) == 1  # nothing created anywhere


@pytest.mark.parametrize(
    "argv, option",
    [
        (["status", "--format", "sql"], "--format"),
        (["status", "--yes"], "--yes"),
        (["plan", "--dry-run"], "--dry-run"),
        (["status", "--ahead", "2"], "--ahead"),
        (["status", "--cascade"], "--cascade"),
    ],
)
def test_an_option_the_action_does_not_take_is_refused(events, argv, option):
    with pytest.raises(CommandError, match=option):
        call_command("partitions", *argv)
