"""A witness whose key is in a PKCS#11 token (SoftHSM2, a fresh token per test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from lineage import merkle, note
from lineage import witness as w
from lineage.errors import ConfigError
from lineage.pkcs11 import TokenConfig, TokenKey
from lineage_cli.main import app
from tests.support.softhsm import USER_PIN, SoftHsm, init_token

ROOT = Path(__file__).resolve().parents[3]
LOG_NAME = "lineage-processor"
ORIGIN = "lineage.local/test/0"
WITNESS_NAME = "witness.test/token"


@pytest.fixture
def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    return init_token(tmp_path / "hsm", monkeypatch)


class Log:
    """A tiny transparency log: leaves, and checkpoints signed with a file key."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.hashes: list[bytes] = []

    @property
    def vkey(self) -> str:
        return note.verifier_key(LOG_NAME, self.key.public_key().public_bytes_raw())

    def grow(self, n: int) -> str:
        """Append ``n`` leaves; the signed checkpoint of the new size."""
        start = len(self.hashes)
        self.hashes += [merkle.leaf_hash(f"leaf {i}".encode()) for i in range(start, start + n)]
        body = note.checkpoint_body(ORIGIN, len(self.hashes), merkle.root_from_hashes(self.hashes))
        return note.sign_note(body, LOG_NAME, self.key)

    def add_checkpoint(self, old_size: int, checkpoint: str) -> bytes:
        proof = merkle.consistency_proof_from_hashes(
            old_size, self.hashes[: int(checkpoint.split("\n")[1])]
        )
        return w.format_add_checkpoint(old_size, proof if old_size else [], checkpoint)


def spec(log: Log) -> w.LogSpec:
    return w.LogSpec("lineage.local/", (log.vkey,), prefix=True)


def test_a_token_witness_cosigns_and_the_cosignature_verifies(hsm: SoftHsm, tmp_path: Path) -> None:
    log = Log()
    store = w.WitnessStore(tmp_path / "w")
    config = store.init(WITNESS_NAME, [spec(log)], key_uri=hsm.uri("witness"), token=hsm.config)
    assert config.key_uri == hsm.uri("witness") and config.public_key is not None
    assert not store.key_path.exists(), "a token witness has no key file"
    doc = json.loads(store.config_path.read_text())
    assert doc["key_uri"] == hsm.uri("witness") and "private" not in json.dumps(doc)

    witness = w.Witness(store, token=hsm.config, clock=lambda: 1_700_000_000)
    assert isinstance(witness.key, TokenKey)
    name, public = w.parse_cosigner_vkey(witness.vkey)
    assert (name, public) == (WITNESS_NAME, config.public_key)
    assert store.vkey() == witness.vkey

    for old, grow in ((0, 3), (3, 5)):
        checkpoint = log.grow(grow)
        resp = witness.add_checkpoint(log.add_checkpoint(old, checkpoint))
        assert resp.status == 200, resp.body
        signed = w.add_signature_lines(checkpoint, [resp.body.decode()])
        text, valid = w.verify_cosignatures(signed, [(name, public)])
        assert [(c.name, c.timestamp) for c in valid] == [(WITNESS_NAME, 1_700_000_000)]
        assert text == note.open_note(checkpoint, spec(log).verifiers())[0]
    state = store.state(ORIGIN)
    assert state is not None and state.size == 8 and state.note == signed

    # A cosignature by another key under the same name does not pass for this witness's.
    other = w.cosign(text, WITNESS_NAME, Ed25519PrivateKey.generate(), 1)
    assert w.verify_cosignatures(checkpoint + other.line(), [(name, public)])[1] == []
    witness.close()


def test_the_token_key_cannot_be_extracted(hsm: SoftHsm, tmp_path: Path) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    store = w.WitnessStore(tmp_path / "w")
    store.init(WITNESS_NAME, key_uri=hsm.uri("witness"), token=hsm.config)
    witness = w.Witness(store, token=hsm.config)
    with pytest.raises(ConfigError, match="cannot leave its pkcs11"):
        witness.key.private_bytes_raw()
    witness.close()
    token = pkcs11.lib(hsm.module).get_token(token_label=hsm.label)
    with token.open(user_pin=USER_PIN) as session:
        (private,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: "witness"}
        )
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(pkcs11.PKCS11Error):
            _ = private[Attribute.VALUE]


def test_init_twice_keeps_the_identity(hsm: SoftHsm, tmp_path: Path) -> None:
    log = Log()
    store = w.WitnessStore(tmp_path / "w")
    first = store.init(WITNESS_NAME, [spec(log)], key_uri=hsm.uri("witness"), token=hsm.config)
    vkey = store.vkey()
    again = store.init(WITNESS_NAME, [spec(log)], key_uri=hsm.uri("witness"), token=hsm.config)
    assert again.public_key == first.public_key and store.vkey() == vkey
    # init without --pkcs11 keeps the token key too: no key file appears.
    store.init(WITNESS_NAME, [spec(log)])
    assert store.vkey() == vkey and not store.key_path.exists()
    # A restarted witness signs as the same identity.
    assert w.Witness(w.WitnessStore(tmp_path / "w"), token=hsm.config).vkey == vkey

    # Another key would change the identity: refused, whether a token key or a file key.
    with pytest.raises(ConfigError, match=r"another key .* would change its identity"):
        store.init(WITNESS_NAME, key_uri=hsm.uri("other"), token=hsm.config)
    file_store = w.WitnessStore(tmp_path / "file-witness")
    file_store.init(WITNESS_NAME)
    with pytest.raises(ConfigError, match="signs with this file key"):
        file_store.init(WITNESS_NAME, key_uri=hsm.uri("witness"), token=hsm.config)


def test_an_existing_token_key_is_adopted_and_checked(hsm: SoftHsm, tmp_path: Path) -> None:
    a = w.WitnessStore(tmp_path / "a")
    a.init(WITNESS_NAME, key_uri=hsm.uri("witness"), token=hsm.config)
    # A second directory naming the same token object has the same identity (a standby).
    b = w.WitnessStore(tmp_path / "b")
    b.init(WITNESS_NAME, key_uri=hsm.uri("witness"), token=hsm.config)
    assert a.vkey() == b.vkey()
    # A config whose recorded public key is not the token's is refused when opened.
    doc = json.loads(b.config_path.read_text())
    doc["public_key"] = w._b64(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    b.config_path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"the token key is .*, not the registered"):
        w.Witness(b, token=hsm.config)


def test_wrong_pin_and_missing_token_are_clear_errors(hsm: SoftHsm, tmp_path: Path) -> None:
    store = w.WitnessStore(tmp_path / "w")
    store.init(WITNESS_NAME, key_uri=hsm.uri("witness"), token=hsm.config)
    with pytest.raises(ConfigError, match="the token refused the PIN"):
        w.Witness(store, token=TokenConfig(module=hsm.module, pin="000000"))
    with pytest.raises(ConfigError, match="no PIN: set LINEAGE_PKCS11_PIN_FILE"):
        w.Witness(store, token=TokenConfig(module=hsm.module))
    with pytest.raises(ConfigError, match=r"no token in .* matches"):
        w.WitnessStore(tmp_path / "x").init(
            WITNESS_NAME, key_uri="pkcs11:token=absent;object=witness", token=hsm.config
        )
    with pytest.raises(ConfigError, match="a PIN in the URI is refused"):
        w.WitnessStore(tmp_path / "y").init(
            WITNESS_NAME, key_uri=hsm.uri("witness") + "?pin-value=246810", token=hsm.config
        )


def _env(hsm: SoftHsm, **extra: str) -> dict[str, str]:
    env = {
        "SOFTHSM2_CONF": str(hsm.conf),
        "LINEAGE_PKCS11_MODULE": hsm.module,
        "LINEAGE_PKCS11_PIN_FILE": str(hsm.pin_file),
    }
    return {**env, **extra}


def test_cli_init_pkcs11_key_and_errors(
    hsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log()
    wdir = str(tmp_path / "w")
    runner = CliRunner()
    monkeypatch.delenv("LINEAGE_PKCS11_PIN", raising=False)
    for name, value in _env(hsm).items():
        monkeypatch.setenv(name, value)
    args = ["witness", "init", "--witness-dir", wdir, "--name", WITNESS_NAME, "--log-key", log.vkey]
    r = runner.invoke(app, [*args, "--pkcs11", hsm.uri("witness")])
    assert r.exit_code == 0, r.output
    vkey = r.output.strip()
    assert vkey.startswith(WITNESS_NAME + "+")
    r = runner.invoke(app, [*args, "--pkcs11", hsm.uri("witness")])
    assert r.exit_code == 0 and r.output.strip() == vkey
    assert not (tmp_path / "w" / "witness.key").exists()
    # The verifier key is printed from the recorded public key: no PIN needed.
    monkeypatch.delenv("LINEAGE_PKCS11_PIN_FILE")
    r = runner.invoke(app, ["witness", "key", "--witness-dir", wdir])
    assert r.exit_code == 0 and r.output.strip() == vkey

    # serve, in a child process: a wrong PIN and a missing token end with one clear line.
    bad_pin = tmp_path / "bad-pin"
    bad_pin.write_text("000000\n")
    (tmp_path / "no-tokens").mkdir()
    no_tokens = tmp_path / "no-tokens.conf"
    no_tokens.write_text(f"directories.tokendir = {tmp_path / 'no-tokens'}\n")
    for env, expected in (
        (_env(hsm, LINEAGE_PKCS11_PIN_FILE=str(bad_pin)), "the token refused the PIN"),
        (_env(hsm, SOFTHSM2_CONF=str(no_tokens)), "no token in"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "lineage_cli", "witness", "serve", "--witness-dir", wdir],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_child_env(), **env},
            cwd=ROOT,
        )
        assert run.returncode == 2, (run.stdout, run.stderr)
        assert expected in run.stderr and "Traceback" not in run.stderr, run.stderr
    r = runner.invoke(
        app,
        [*args[:3], str(tmp_path / "v"), *args[4:], "--pkcs11", "pkcs11:token=absent;object=w"],
        env={"LINEAGE_PKCS11_PIN_FILE": str(hsm.pin_file)},
    )
    assert r.exit_code == 2 and "no token in" in r.output and r.exception is not None
    assert isinstance(r.exception, SystemExit)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "SOFTHSM2_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "300"  # one error line, not wrapped
    return env


def test_the_demo_moves_a_file_witness_to_the_token(hsm: SoftHsm, tmp_path: Path) -> None:
    from infra.demo_witness import DemoWitness, token_key_uri

    store = w.WitnessStore(tmp_path / "w")
    store.init(WITNESS_NAME)
    file_vkey = store.vkey()
    retired = DemoWitness._retire_file_key(store)
    assert retired is not None and retired.exists() and not store.key_path.exists()
    store.init(WITNESS_NAME, key_uri=token_key_uri(hsm.label), token=hsm.config)
    assert store.vkey() != file_vkey
    assert DemoWitness._retire_file_key(store) is None  # already in the token: nothing to move
    assert token_key_uri("a b/c") == "pkcs11:token=a%20b%2Fc;object=lineage-witness"
