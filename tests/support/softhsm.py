"""A SoftHSM2 token in a temporary directory, for tests of keys held in PKCS#11 tokens."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage.pkcs11 import TokenConfig, reinitialize

USER_PIN = "246810"
SO_PIN = "13579113"
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class SoftHsm:
    """One initialised token: its label, the library, and a PIN file (mode 0600)."""

    directory: Path
    conf: Path
    label: str
    module: str
    pin_file: Path

    @property
    def config(self) -> TokenConfig:
        return TokenConfig(module=self.module, pin_file=self.pin_file)

    def uri(self, obj: str) -> str:
        return f"pkcs11:token={self.label};object={obj}"


def softhsm_module() -> str | None:
    return next((m for m in MODULE_CANDIDATES if Path(m).exists()), None)


def init_token(directory: Path, monkeypatch: pytest.MonkeyPatch, label: str = "lineage") -> SoftHsm:
    """Initialise a fresh token under ``directory`` and point SoftHSM2 at it (SOFTHSM2_CONF).

    Skips, saying why, when SoftHSM2 is not installed (.ci/run installs it).
    """
    module = softhsm_module()
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2; .ci/run does)")
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", USER_PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        timeout=30,
        env={"SOFTHSM2_CONF": str(conf), "PATH": "/usr/bin:/bin"},
    )
    pin_file = directory / "pin"
    pin_file.write_text(USER_PIN + "\n")
    pin_file.chmod(0o600)
    reinitialize()  # a library loaded by an earlier test re-reads SOFTHSM2_CONF
    return SoftHsm(directory, conf, label, module, pin_file)
