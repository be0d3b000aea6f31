from django.db import migrations, models

from data_arch.backfills.operations import AddForeignKey, AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("audit", "0002_tables")]

    operations = [
        migrations.AddField("ddlchild", "parent", models.ForeignKey(
            "audit.DdlParent", models.CASCADE, null=True, db_constraint=False, db_index=False)),
        AddForeignKey("ddlchild", "parent"),
        AddIndexConcurrently("ddlchild", models.Index(fields=["parent"], name="ddlchild_parent")),
    ]
