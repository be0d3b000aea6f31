from django.db import migrations, models

from data_arch.backfills.operations import AddCheckConstraint, SetNotNull


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("audit", "0003_foreign_key_and_index")]

    operations = [
        SetNotNull("ddlchild", "value"),
        AddCheckConstraint("ddlchild", models.CheckConstraint(
            condition=models.Q(value__gte=0), name="ddlchild_value_positive")),
    ]
