"""Save the 30 drawn digits of data/drawn_digits.json through the drawing page's Save buttons' endpoint, as a
user collecting their own digits would, then measure a model on them with --evaluate.

    python tools/collect_drawn_digits.py --model outputs/model.keras --collect my_digits
    python handwritten_digit_classification.py --evaluate my_digits --model outputs/model.keras

It starts `--draw --collect DIR` with the model and sends each drawing to POST /save under its digit
(the request the page's "Save as" buttons send), over real HTTP.
"""
import argparse
import http.client
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.drawing_page import DRAWINGS, start_server  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="the model the drawing page runs")
    parser.add_argument("--collect", required=True, type=Path, help="the folder to save the drawings to")
    args = parser.parse_args()
    process, url = start_server("--port", 0, "--model", args.model, "--collect", args.collect)
    if url is None:
        sys.exit("the drawing page did not start: " + process.stderr.read().strip())
    host, port = url.split("/")[2].split(":")
    try:
        for drawing in DRAWINGS["drawings"]:
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            connection.request("POST", "/save", json.dumps({"strokes": drawing["strokes"], "digit": drawing["digit"]}),
                               {"Content-Type": "application/json"})
            reply = json.loads(connection.getresponse().read())
            connection.close()
            print(reply.get("saved") or f"error: {reply['error']}")
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
