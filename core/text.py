"""Small wordings shared by pages and e-mails."""

from __future__ import annotations


def duration_text(seconds: float) -> str:
    """'7 s', '3 min 05 s', '2 h 04 min'."""
    minutes, seconds = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
