"""Progress bars: widgets in Jupyter, text lines in a stage run."""
import io

from tqdm.std import tqdm as text_tqdm

from videonarrator.progress import progress_bar


def test_text_mode_writes_plain_lines_at_the_set_interval(monkeypatch):
    monkeypatch.setenv("VN_PROGRESS", "text")
    monkeypatch.setenv("VN_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    assert list(progress_bar(range(3), desc="counting", file=out)) == [0, 1, 2]
    assert "counting" in out.getvalue() and "3/3" in out.getvalue()
    bar = progress_bar(total=5, file=io.StringIO())
    assert type(bar) is text_tqdm and bar.mininterval == 0
    bar.close()
    monkeypatch.delenv("VN_PROGRESS_INTERVAL")
    bar = progress_bar(total=5, file=io.StringIO())
    assert bar.mininterval == 30          # a long stage's log gets one line per half minute
    bar.close()


def test_disabled_bars_iterate_silently(monkeypatch):
    monkeypatch.setenv("VN_PROGRESS", "text")
    out = io.StringIO()
    assert list(progress_bar([1, 2], disable=True, file=out)) == [1, 2] and out.getvalue() == ""
