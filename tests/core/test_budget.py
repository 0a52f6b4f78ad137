# The publish budget (docs/protocol.md#publish-budget): 100 to start, one per
# publish, one back every 5 s, capped at 1024; on the wrapping tick clock.
from rainmaker.budget import Budget


def test_starts_with_100_and_runs_out():
    b = Budget(0)
    assert b.available(0) == 100
    for _ in range(100):
        assert b.take(0)
    assert not b.take(0) and b.available(0) == 0


def test_one_token_back_every_5_s():
    b = Budget(0, start=0)
    assert b.available(4999) == 0
    assert b.available(5000) == 1
    assert b.take(5000) and not b.take(9999)
    assert b.take(10000)
    assert b.available(10000 + 3 * 5000) == 3


def test_capped():
    b = Budget(0, start=1020)
    assert b.available(10 * 60 * 1000) == 1024
    b.take(10 * 60 * 1000)
    # After the cap the clock restarts: no credit for time spent at the cap.
    assert b.available(10 * 60 * 1000 + 4999) == 1023


def test_refill_across_tick_wrap():
    wrap = 0x40000000
    b = Budget(wrap - 2000, start=0)
    assert b.available(3000) == 1  # 5 s later, after the tick counter wrapped
