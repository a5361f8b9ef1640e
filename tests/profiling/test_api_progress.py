"""Progress lines of a long profiling run: on stderr, rate-limited, always at the last item."""

from quota.profiling.measure import progress_reporter


def test_progress_reports_first_and_last_items_and_rate_limits_between(capsys):
    on_item = progress_reporter("grid items", every_s=1000.0)
    for done in range(1, 6):
        on_item(done, 5)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[quota profile] grid items: 1/5 in ")
    assert lines[1].startswith("[quota profile] grid items: 5/5 in ") and lines[1].endswith("about 0 s left")
