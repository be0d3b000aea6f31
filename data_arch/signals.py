"""Signals a project can connect to. Each is sent once per run, after it, by the library call
(so whichever entry point ran the work: a task, a command, the admin)."""

from django.dispatch import Signal

#: sender: "data_arch"; kwargs: tenant (str, "" for shared), tables (list of "schema.table"),
#: partitions (list of partition names).
partitions_created = Signal()
#: kwargs: tenant, partitions (detached, dropped or archived), mode.
partitions_retained = Signal()
#: kwargs: tenant, partitions (months whose rows were moved out of a default partition).
partitions_drained = Signal()
#: kwargs: tenant, results (list of {"warmer", "seconds", "error"}).
warmers_run = Signal()
#: kwargs: job, tenant, error (str).
maintenance_failed = Signal()
