"""Signing cost per seal: an Ed25519 key in a file (in memory) versus one in a PKCS#11 token.

Run: ``python -m bench.signing_bench [--n 2000]``. Without ``--token-uri`` it initialises a
throw-away SoftHSM2 token in a temporary directory (needs ``softhsm2-util``); with it, it signs
with that token key (library and PIN from LINEAGE_PKCS11_MODULE / LINEAGE_PKCS11_PIN_FILE).
Each signature is over a real seal message (``hashing.seal_message``); one seal covers
``seal_every_events`` events, so the per-event figure is the per-seal cost divided by that.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lineage import hashing, note
from lineage.config import Settings
from lineage.keys import Role, Signer


def _seal_message(n: int) -> bytes:
    return hashing.seal_message(
        "tool-runner#bench0000001",
        "ed25519:0123456789abcdef",
        "lineage.events",
        3,
        n * 100,
        n * 100 + 99,
        bytes(32),
        bytes(32),
    )


def _time(sign: Callable[[bytes], bytes], n: int) -> list[float]:
    messages = [_seal_message(i) for i in range(n)]
    for m in messages[: min(50, n)]:  # warm up (session, caches)
        sign(m)
    out = []
    for m in messages:
        t = time.perf_counter_ns()
        sign(m)
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def _row(name: str, samples: list[float], per_seal_events: int) -> str:
    samples = sorted(samples)
    med = statistics.median(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    return (
        f"{name:<28} median {med:8.1f} µs  p99 {p99:8.1f} µs  "
        f"{1e6 / med:9,.0f} seals/s  {med / per_seal_events:6.2f} µs/event "
        f"(at {per_seal_events} events/seal)"
    )


def _softhsm_token(directory: Path) -> tuple[str, Path, str]:
    from lineage.pkcs11 import _KNOWN_MODULES

    util = shutil.which("softhsm2-util")
    module = next((m for m in _KNOWN_MODULES if Path(m).exists()), None)
    if util is None or module is None:
        raise SystemExit("softhsm2 is not installed (apt-get install softhsm2) and no --token-uri")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = directory / "pin"
    pin.write_text("123456\n")
    subprocess.run(
        [
            util,
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "123456",
            "--so-pin",
            "1234567",
        ],
        check=True,
        capture_output=True,
    )
    return "pkcs11:token=bench;object=bench-seal", pin, module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="signatures per backend")
    parser.add_argument("--token-uri", help="an existing token key (pkcs11:...) to use")
    args = parser.parse_args(argv)
    from lineage.pkcs11 import TokenConfig, generate_token_key, open_token_key

    settings = Settings()
    per_seal = settings.seal_every_events
    file_signer, _ = Signer.generate_ephemeral("tool-runner", Role.EMITTER)
    rows = [_row("file key (in memory)", _time(file_signer.sign, args.n), per_seal)]
    with tempfile.TemporaryDirectory(prefix="lineage-bench-hsm-") as tmp:
        if args.token_uri:
            uri, config = args.token_uri, TokenConfig.from_settings(settings)
            key = open_token_key(uri, None, config)
            where = uri
        else:
            uri, pin, module = _softhsm_token(Path(tmp))
            config = TokenConfig(module=module, pin_file=pin)
            generate_token_key(uri, "tool-runner", Role.EMITTER, config=config)
            key = open_token_key(uri, None, config)
            where = f"SoftHSM2 {module}"
        token_samples = _time(key.sign, args.n)
        rows.append(_row("PKCS#11 token (CKM_EDDSA)", token_samples, per_seal))
        body = note.checkpoint_body("lineage/lineage.events/0", 123456, bytes(32))
        cp = _time(lambda _m: note.sign_note(body, "lineage-processor", key).encode(), args.n // 4)
        rows.append(_row("token checkpoint note", cp, per_seal))
        key.close()
    print(f"signing cost per seal, {args.n} signatures each; token: {where}")
    for row in rows:
        print("  " + row)


if __name__ == "__main__":
    main()
