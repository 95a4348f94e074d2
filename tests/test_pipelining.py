"""rayx._private.pipelining: the run-time average and the rule for queueing a
short task behind others, shared by the raylet's dispatcher and leased tasks."""
from rayx._private.pipelining import SMOOTHING, PipelineRule, RunTimes


def test_run_times_start_at_the_first_measurement_then_smooth():
    times = RunTimes()
    assert times.get(b"f") is None
    times.record(b"f", 0.010)
    assert times.get(b"f") == 0.010
    times.record(b"f", 0.020)
    assert abs(times.get(b"f") - ((1 - SMOOTHING) * 0.010 + SMOOTHING * 0.020)) < 1e-12
    assert times.get(b"g") is None


def test_only_measured_short_functions_may_queue():
    times = RunTimes()
    rule = PipelineRule(short_seconds=0.002, budget_seconds=float("inf"), max_depth=4)
    assert rule.expected(times, b"never-ran") is None
    times.record(b"short", 0.001)
    times.record(b"long", 0.5)
    assert rule.expected(times, b"short") == 0.001
    assert rule.expected(times, b"long") is None


def test_room_on_a_worker():
    rule = PipelineRule(short_seconds=0.02, budget_seconds=0.02, max_depth=3)
    assert rule.has_room(0, 0.0, False, None)            # an idle worker takes anything
    assert not rule.has_room(1, 0.0, False, None)        # unknown run time: alone
    assert not rule.has_room(1, 0.0, True, 0.001)        # behind one that runs alone: no
    assert rule.has_room(2, 0.010, False, 0.005)
    assert not rule.has_room(2, 0.018, False, 0.005)     # over the budget
    assert not rule.has_room(3, 0.0, False, 0.001)       # at the depth limit
