"""The classify workers' silence, alone, on an injected clock (with a real Redis and a real
daemon: test_broker_health.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from worker.remote.silence import SILENCE_SHARE, Silence


def _said(caplog, words: str) -> list[int]:
    return [r.levelno for r in caplog.records if words in r.getMessage()]


def test_a_silence_is_said_once_counted_from_the_brokers_return_and_its_end_too(caplog):
    caplog.set_level(logging.INFO, logger="worker.remote.silence")
    now = [0.0]
    silence = Silence(10, clock=lambda: now[0])
    assert silence.after == SILENCE_SHARE * 10
    out = [SimpleNamespace(sent=True, answer=None)]
    silence.watch(4.0, out, broker_up=False)  # Redis away: that outage is what is said
    silence.watch(8.0, out, broker_up=True)
    assert _said(caplog, "no classify worker has answered") == [], "counted from Redis' return"
    silence.watch(9.0, out, broker_up=True)
    silence.watch(20.0, out, broker_up=True)
    assert _said(caplog, "no classify worker has answered") == [logging.WARNING], "once, not each turn"
    now[0] = 21.0
    silence.heard()
    silence.heard()
    assert _said(caplog, "classify workers answer again") == [logging.INFO]


def test_nothing_out_is_no_silence(caplog):
    silence = Silence(10, clock=lambda: 0.0)
    silence.watch(100.0, [], broker_up=True)
    silence.watch(100.0, [SimpleNamespace(sent=False, answer=None)], broker_up=True)
    assert _said(caplog, "no classify worker") == []
