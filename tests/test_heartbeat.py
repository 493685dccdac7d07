"""A swarm worker's heartbeat: beats pushed on a timer, and liveness judged on the observer's own clock."""
import threading
import time

from engine.loop.heartbeat import Heartbeat, Pulse


def beat(clone, count, state="running", run="r1", every=10.0):
    return {"worker": "w", "clone": clone, "run": run, "beat": count, "every": every, "state": state}


def test_liveness_comes_from_a_counter_seen_to_move_on_this_clock():
    now = [1000.0]
    pulse = Pulse(clock=lambda: now[0])
    assert pulse.state("a") == "unknown"  # never seen
    pulse.observe([beat("a", 1), beat("b", 7), beat("c", 3)])
    assert [pulse.state(c) for c in "abc"] == ["unknown"] * 3  # seen once: cannot tell yet
    now[0] += 15
    pulse.observe([beat("a", 2), beat("b", 7), beat("c", 3, "bye")])
    assert [pulse.state(c) for c in "abc"] == ["live", "unknown", "gone"]
    now[0] += 26  # 41 s since b's counter was first seen at 7: more than 4 periods of 10 s
    pulse.observe([beat("a", 2), beat("b", 7)])
    assert pulse.state("a") == "live" and pulse.state("b") == "dead"  # a moved 26 s ago, within 40 s
    assert pulse.quiet_for("a") == 26
    now[0] += 15
    assert pulse.state("a") == "live"  # 41 s, but nothing read since: time alone proves nothing
    pulse.observe([beat("a", 2), beat("b", 7)])
    assert pulse.state("a") == "dead"  # now seen standing still for 41 s
    pulse.observe([beat("b", 1, run="r2")])  # b's clone restarted: its counter began again, and moved
    assert pulse.state("b") == "live"


def test_an_observer_that_cannot_fetch_calls_no_one_dead():
    """Cut off from the remote for an hour, the observer reads no beat: a clone stays as last
    seen, and is called dead only once its counter is seen standing still for the window."""
    now = [0.0]
    pulse = Pulse(clock=lambda: now[0])
    pulse.observe([beat("a", 1)])
    now[0] += 5
    pulse.observe([beat("a", 2)])
    now[0] += 3600  # no fetch succeeded meanwhile
    assert pulse.state("a") == "live"
    pulse.observe([beat("a", 2)])  # back online: the counter has not moved since last read
    assert pulse.state("a") == "dead"
    pulse.observe([beat("a", 3)])
    assert pulse.state("a") == "live"


def test_a_beat_file_cannot_stretch_or_break_the_window():
    pulse = Pulse(clock=lambda: 0.0)
    pulse.observe([beat("a", 1, every=1e12), beat("b", 1, every="soon"), beat("c", 1, every=float("nan")),
                   beat("d", 1, every=0.0)])
    assert [pulse.window(c) for c in "abcd"] == [4 * 3600.0, 4 * 60.0, 4 * 60.0, 4 * 0.1]


def test_the_thread_beats_only_when_no_push_carried_a_beat_lately():
    heartbeat = Heartbeat("w", "c" * 12, every=0.2)
    pushes = []

    def push():
        heartbeat.record()
        heartbeat.sent()
        pushes.append(time.monotonic())

    heartbeat.start(push)
    time.sleep(1.0)
    heartbeat.stop()
    assert 3 <= len(pushes) <= 7  # about one per 0.2 s
    assert all(later - earlier >= 0.19 for earlier, later in zip(pushes, pushes[1:]))
    assert not [t for t in threading.enumerate() if t.name == "swarm-heartbeat"]
    quiet = Heartbeat("w", "d" * 12, every=0.2)
    quiet_pushes = []

    def busy_push():  # the loop itself pushes often: each push carries a beat, the thread adds none
        quiet.sent()
    quiet.start(lambda: quiet_pushes.append(1))
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        busy_push()
        time.sleep(0.02)
    quiet.stop()
    assert quiet_pushes == []


def test_each_beat_names_its_clone_and_a_new_count():
    heartbeat = Heartbeat("tpu.a", "0123456789ab", every=30)
    first, second = heartbeat.record(), heartbeat.record("bye")
    assert '"beat": 1' in first and '"beat": 2' in second and '"state": "bye"' in second
    assert '"clone": "0123456789ab"' in first and '"worker": "tpu.a"' in first
    assert Heartbeat("w", "x").run != Heartbeat("w", "x").run  # a restart never repeats a value
