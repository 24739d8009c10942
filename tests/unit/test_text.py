from core.text import duration_text


def test_durations_read_as_seconds_minutes_or_hours():
    assert duration_text(7) == "7 s"
    assert duration_text(185.9) == "3 min 05 s"
    assert duration_text(2 * 3600 + 4 * 60 + 59) == "2 h 04 min"
    assert duration_text(-3) == "0 s"  # a clock step backwards is not a negative duration
