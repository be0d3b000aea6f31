"""Monthly RANGE partitions: declaration, plan/apply maintenance, status and index operations."""

from data_arch.partitioning.declaration import (
    MonthlyPartitioning,
    partitioned_models,
    partitioning_of,
)
from data_arch.partitioning.maintenance import (
    Action,
    ApplyResult,
    PartitionError,
    Plan,
    TablePlan,
    apply,
    plan,
    status,
)
from data_arch.partitioning.operations import AddIndexConcurrently

__all__ = [
    "Action",
    "AddIndexConcurrently",
    "ApplyResult",
    "MonthlyPartitioning",
    "PartitionError",
    "Plan",
    "TablePlan",
    "apply",
    "partitioned_models",
    "partitioning_of",
    "plan",
    "status",
]
