"""``manage.py data_arch_alerts``: Prometheus alert rules with this project's thresholds."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from data_arch.alerts import render


class Command(BaseCommand):
    help = "Print Prometheus alert rules for data_arch's metrics, thresholds from DATA_ARCH."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(render(), ending="")
