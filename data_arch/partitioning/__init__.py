"""Monthly RANGE partitions: declaration, plan/apply maintenance, status and index operations."""

from data_arch.partitioning.declaration import (
    MonthlyPartitioning,
    partitioned_models,
    partitioning_of,
)
from data_arch.partitioning.ingest import copy_rows
from data_arch.partitioning.operations import AddIndexConcurrently, AddPartitionedIndex
from data_arch.partitioning.plan import Action, PartitionError, Plan, Step, TablePlan, plan
from data_arch.partitioning.runner import (
    ApplyResult,
    Failure,
    MaintenanceBusy,
    MaintenanceError,
    apply,
)
from data_arch.partitioning.status import PartitionStatus, TableStatus, status

__all__ = [
    "Action",
    "AddIndexConcurrently",
    "AddPartitionedIndex",
    "ApplyResult",
    "Failure",
    "MaintenanceBusy",
    "MaintenanceError",
    "MonthlyPartitioning",
    "PartitionError",
    "PartitionStatus",
    "Plan",
    "Step",
    "TablePlan",
    "TableStatus",
    "apply",
    "copy_rows",
    "partitioned_models",
    "partitioning_of",
    "plan",
    "status",
]
