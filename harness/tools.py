"""Command-line tools some tests need, found or fetched without installing anything system-wide.

``promtool`` comes from Debian's ``prometheus`` package: the system's when installed, else the
binary extracted from the package downloaded with ``apt-get download`` (no root needed) into a
per-user cache folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class ToolMissing(RuntimeError):
    """The tool cannot be found or fetched here; the message says what to install."""


def _cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "data_arch-tools"


def promtool() -> str:
    """The path of a working ``promtool``."""
    found = shutil.which("promtool")
    if found:
        return found
    cached = _cache() / "promtool"
    if cached.exists():
        return str(cached)
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise ToolMissing("promtool not found: install Prometheus (Debian: apt-get install prometheus)")
    with tempfile.TemporaryDirectory(prefix="data_arch-promtool-") as workdir:
        download = subprocess.run(
            ["apt-get", "download", "prometheus"], cwd=workdir, capture_output=True, text=True
        )
        debs = list(Path(workdir).glob("prometheus_*.deb"))
        if download.returncode != 0 or not debs:
            raise ToolMissing(
                "promtool not found and `apt-get download prometheus` failed: "
                f"{download.stderr.strip()[-300:]} (install Prometheus: apt-get install prometheus)"
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), f"{workdir}/x"], check=True)
        binary = Path(workdir) / "x" / "usr" / "bin" / "promtool"
        if not binary.exists():
            raise ToolMissing("the prometheus package has no usr/bin/promtool")
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, cached)
    return str(cached)


def chromium() -> tuple[str, str]:
    """``(browser, driver)``: Debian's ``chromium`` and ``chromium-driver``, installed with
    apt-get when missing and running as root."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    from harness.services import apt_install

    if not apt_install("chromium", "chromium-driver"):
        raise ToolMissing("no chromium + chromedriver, and they cannot be installed here "
                          "(Debian, as root: apt-get install chromium chromium-driver)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        raise ToolMissing("apt-get installed chromium but chromium/chromedriver are not on PATH")
    return browser, driver
