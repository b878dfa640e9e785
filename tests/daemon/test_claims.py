"""Claiming by rename, and adopting the claims of a dead daemon (never a live one's)."""

from __future__ import annotations

import os
import subprocess
import sys

from worker.daemon.claims import Claims


def test_claim_moves_file_into_work(tmp_path):
    (tmp_path / "a b,c.png").write_bytes(b"data")
    claims = Claims(tmp_path)
    claim = claims.claim("a b,c.png")
    assert claim is not None and claim.path.read_bytes() == b"data"
    assert not (tmp_path / "a b,c.png").exists()
    claim.path.unlink()  # archived or quarantined: the claim is finished after it left
    claims.finish(claim)
    claims.close()
    assert os.listdir(tmp_path / ".work") == []


def test_claim_of_vanished_file_is_none(tmp_path):
    claims = Claims(tmp_path)
    assert claims.claim("nope.png") is None
    claims.close()


def test_two_daemons_one_file_one_winner(tmp_path):
    (tmp_path / "x.png").write_bytes(b"1")
    a, b = Claims(tmp_path), Claims(tmp_path)
    results = [a.claim("x.png"), b.claim("x.png")]
    assert sum(r is not None for r in results) == 1
    a.close()
    b.close()


def test_live_daemons_claims_are_not_adopted(tmp_path):
    (tmp_path / "x.png").write_bytes(b"1")
    alive = Claims(tmp_path)
    alive.claim("x.png")
    other = Claims(tmp_path)
    assert other.recover() == []
    other.close()
    alive.close()


def test_dead_daemons_claims_are_adopted(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.png").write_bytes(b"1")
    code = (
        "import os,sys; from worker.daemon.claims import Claims; c=Claims(sys.argv[1]); "
        "c.claim('sub/x.png'); os._exit(0)"  # dies holding a claim, like kill -9
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    survivor = Claims(tmp_path)
    recovered = survivor.recover()
    assert [c.rel for c in recovered] == ["sub/x.png"]
    assert recovered[0].path.read_bytes() == b"1"
    assert sorted(os.listdir(tmp_path / ".work")) == sorted([survivor.owner, f"{survivor.owner}.lock"])
    survivor.finish(recovered[0])
    survivor.close()


def test_flat_name_round_trips_any_relative_path():
    from worker.daemon.claim import flat_name, parse_flat_name

    for rel in ["x.png", "a/b/x.png", "100%/a%2Fb.png", "we=ird=.png", "ünï/数字 %25.png"]:
        assert parse_flat_name(flat_name("0123456789abcdef", rel)) == ("0123456789abcdef", rel)


def test_too_long_name_is_claimed_nested_and_recovered(tmp_path):
    name = "x" * 240 + ".png"
    (tmp_path / name).write_bytes(b"1")
    claims = Claims(tmp_path)
    claim = claims.claim(name)
    assert claim.folder is not None and claim.path.read_bytes() == b"1"
    claims.close()  # stops with the claim unfinished: it stays, the lock is released
    survivor = Claims(tmp_path)
    [recovered] = survivor.recover()
    assert (recovered.id, recovered.rel) == (claim.id, name)
    recovered.path.unlink()
    survivor.finish(recovered)
    survivor.close()
    assert not (tmp_path / ".work" / survivor.owner).exists()


def test_recovery_lists_claims_in_the_order_they_were_made(tmp_path):
    """A replay writes rows in recovery order; it must be the first order (see ``new_id``)."""
    names = [f"{i:03d}-{c}.png" for i, c in enumerate("zyxwvutsrqponmlkjihgfedcba" * 4)]
    names[7] = "d/" + "n" * 250 + ".png"  # too long for a flat name: the nested form
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"data")
    claims = Claims(tmp_path)
    made = [claims.claim(name).id for name in reversed(names)]
    assert [c.id for c in claims.recover()] == made
    assert len(set(made)) == len(made)
