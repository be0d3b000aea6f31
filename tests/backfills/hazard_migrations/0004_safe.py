from django.db import migrations, models

from data_arch.backfills.operations import (
    AddCheckConstraint,
    AddForeignKey,
    AddIndexConcurrently,
    SetNotNull,
)


class Migration(migrations.Migration):
    """The safe alternatives, and one hazard the migration deliberately accepts."""

    atomic = False
    dependencies = [("audit", "0003_hazards")]
    data_arch_ignore = ["DA101"]

    operations = [
        AddIndexConcurrently("thing", models.Index(fields=["size", "id"], name="thing_size_id")),
        AddCheckConstraint("thing", models.CheckConstraint(
            condition=models.Q(size__lte=100), name="thing_size_small")),
        migrations.AddField("thing", "third", models.ForeignKey(
            "audit.Owner", models.CASCADE, null=True, db_constraint=False, db_index=False,
            related_name="+")),
        AddForeignKey("thing", "third"),
        SetNotNull("thing", "size"),
        migrations.AlterField("thing", "code", models.CharField(max_length=40)),
        migrations.AddIndex("thing", models.Index(fields=["id", "size"], name="thing_accepted")),
    ]
