"""The drawing page's server (--draw) over real HTTP: nothing sent to it costs minutes or gigabytes.
Limits are checked before the work, and a refused request leaves the server serving."""
import json

from test_server import post, still_serving


def strokes_body(strokes):
    return json.dumps({"strokes": strokes}).encode()


def test_too_many_strokes_are_refused_before_any_grouping(server):
    _, url = server
    dots = [[[100 * n, n % 7]] for n in range(20_000)]  # 20,000 one-point strokes far apart, ~270 KB
    status, reply = post(url, strokes_body(dots))
    assert status == 400 and "too many strokes" in reply["error"], reply
    assert still_serving(url)
