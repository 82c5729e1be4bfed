#!/usr/bin/env python3
"""Drives a running `tessera serve` with OpenAI's own Python SDK, unchanged, through every
Videos API call it has, and checks what comes back. Not part of `cargo test` (it needs the
`openai` package):

    python3 -m venv /tmp/oai && /tmp/oai/bin/pip install openai
    cargo run --release -- serve --addr 127.0.0.1:8000 --data /tmp/tessera-data --api-key sk-local &
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=sk-local /tmp/oai/bin/python scripts/openai-client-check.py OUT_DIR

Prints one line per call with its timing, and writes the downloads into OUT_DIR. With
TESSERA_WEBHOOK_PORT and TESSERA_WEBHOOK_SECRET set (and the server started with
`--webhook-url http://127.0.0.1:PORT/ --webhook-secret SECRET`), it also receives the server's
`video.completed` event and checks its signature with `client.webhooks.verify_signature`.
"""
import http.server
import json
import os
import queue
import sys
import threading
import time
import warnings

import openai
from openai import OpenAI

warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the Sora API as retired


def step(what, fn):
    t = time.time()
    out = fn()
    print(f"{what}: {time.time() - t:.2f} s")
    return out


def webhook_receiver(port):
    """Collects (headers, body) of every POST to 127.0.0.1:port."""
    events = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            events.put((dict(self.headers), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return events


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    client = OpenAI()
    print(f"openai {openai.__version__} against {client.base_url}")
    hook_port, hook_secret = os.environ.get("TESSERA_WEBHOOK_PORT"), os.environ.get("TESSERA_WEBHOOK_SECRET")
    events = webhook_receiver(int(hook_port)) if hook_port else None

    video = step("videos.create_and_poll (sora-2, 4 s)", lambda: client.videos.create_and_poll(
        model="sora-2", prompt="a red ball bounces across a blue floor", seconds="4", size="720x1280"))
    assert video.status == "completed", video
    assert video.progress == 100, video
    print(f"  {video.id}: model {video.model}, size {video.size} (asked 720x1280), seconds {video.seconds}")

    if events is not None:
        headers, body = events.get(timeout=30)
        client.webhooks.verify_signature(body, headers, secret=hook_secret)
        event = json.loads(body)
        assert event["type"] == "video.completed" and event["data"]["id"] == video.id, event
        print(f"  webhook {event['type']} for {event['data']['id']}: signature verified by the SDK")

    for variant, name in [("video", "video.mp4"), ("thumbnail", "thumbnail.png"), ("spritesheet", "spritesheet.png")]:
        content = step(f"videos.download_content variant={variant}",
                       lambda: client.videos.download_content(video.id, variant=variant))
        path = os.path.join(out, name)
        content.write_to_file(path)
        data = open(path, "rb").read()
        assert data[4:8] == b"ftyp" if variant == "video" else data[:8] == b"\x89PNG\r\n\x1a\n", variant
        print(f"  {path}: {len(data)} bytes")

    got = step("videos.retrieve", lambda: client.videos.retrieve(video.id))
    assert got.id == video.id and got.status == "completed"

    remix = step("videos.remix + poll", lambda: client.videos.poll(
        client.videos.remix(video.id, prompt="a green ball bounces across a blue floor").id))
    assert remix.status == "completed" and remix.remixed_from_video_id == video.id, remix

    # The SDK (3.63) refuses `video={"id": ...}` here before sending anything (it expects a
    # file at `video`), so the extension uploads the clip; `video[id]` works over plain HTTP.
    with open(os.path.join(out, "video.mp4"), "rb") as f:
        ext = step("videos.extend (upload) + poll", lambda: client.videos.poll(
            client.videos.extend(prompt="the ball rolls on", seconds="4", video=f).id))
    assert ext.status == "completed", ext

    with open(os.path.join(out, "video.mp4"), "rb") as f:
        edit = step("videos.edit (upload) + poll", lambda: client.videos.poll(
            client.videos.edit(prompt="a purple ball", video=f).id))
    assert edit.status == "completed", edit

    with open(os.path.join(out, "thumbnail.png"), "rb") as f:
        image = step("videos.create (input_reference upload) + poll", lambda: client.videos.poll(
            client.videos.create(prompt="the ball rolls away", input_reference=f, seconds="4").id))
    assert image.status == "completed", image

    ids = [v.id for v in step("videos.list (auto-paging, limit 2)", lambda: list(client.videos.list(limit=2)))]
    for v in (video, remix, ext, edit, image):
        assert v.id in ids, (v.id, ids)
    print(f"  {len(ids)} videos listed")

    deleted = step("videos.delete", lambda: client.videos.delete(edit.id))
    assert deleted.deleted and deleted.id == edit.id
    try:
        client.videos.retrieve(edit.id)
        raise AssertionError("deleted video still retrievable")
    except openai.NotFoundError as e:
        print(f"  retrieve after delete: {e.status_code} {e.body['code'] if isinstance(e.body, dict) else e.body}")

    try:
        client.videos.create(prompt="", seconds="4")
        raise AssertionError("empty prompt accepted")
    except openai.BadRequestError as e:
        print(f"  empty prompt: {e.status_code} {e.message}")

    try:
        OpenAI(api_key="sk-wrong").videos.list()
        print("  (server runs without API keys)")
    except openai.AuthenticationError as e:
        print(f"  wrong key: {e.status_code} {e.message}")
    print("all calls behaved")


if __name__ == "__main__":
    main()
