"""The simplest direction-following data: one circle (red unless COLOURS says) on slate, starting
near the centre and moving left or right at the shapes world's "steadily" (0.4 frame widths a
second), captioned in the world's grammar so that the two captions differ in one word. A
`tessera train dit --data` folder (videos/ + captions.jsonl). COLOURS, a comma list of red,
blue, green and yellow (default red), gives the circles those colours in turn, each with both
sides: with several, a word must move circles it was not learnt on alone; without red,
`probe.py` asks for a colour never trained on (TRAINING.md, session 33).

    python make_clips.py OUT_DIR [COUNT] [COLOURS]      # needs numpy and ffmpeg
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import COLOURS, W, caption, disc

out = Path(sys.argv[1])
count = int(sys.argv[2]) if len(sys.argv) > 2 else 256
names = sys.argv[3].split(",") if len(sys.argv) > 3 else ["red"]
unknown = [n for n in names if n not in COLOURS]
if unknown:
    sys.exit(f"unknown colour(s) {unknown}: pick from {','.join(COLOURS)}")
(out / "videos").mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
FRAMES, FPS = 33, 16
with open(out / "captions.jsonl", "w") as captions:
    for i in range(count):
        side = "left" if i % 2 == 0 else "right"
        name = names[i // 2 % len(names)]
        rgb = COLOURS[name]
        x0, y0 = 32 + rng.uniform(-6, 6), rng.uniform(20, 44)
        step = (-1 if side == "left" else 1) * 0.4 * W / FPS
        frames = np.stack([disc(x0 + step * f, y0, rgb) for f in range(FRAMES)])
        video = f"videos/{i:04d}.mp4"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", f"{W}x{W}", "-r", str(FPS), "-i", "-", "-pix_fmt", "yuv420p",
             "-c:v", "libx264", "-profile:v", "baseline", "-crf", "8", str(out / video)],
            input=frames.tobytes(), check=True)
        captions.write(json.dumps({"video": video, "caption": caption(side, name)}) + "\n")
