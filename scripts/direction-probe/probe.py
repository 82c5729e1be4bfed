"""Does a model move the red circle the way the caption says? For each seed, generates both
captions (left, right) from text alone and from a still of the circle at the centre
(image→video), then fits a line to the red centroid's x over the frames it is seen in; the
displacement over the clip is the slope times its length (the clips it trained on move 51 px).

    python probe.py TESSERA_BINARY MODEL_DIR OUT_DIR [SEEDS]   # needs numpy and ffmpeg
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import W, caption, disc, red_x

tessera, model, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
seeds = int(sys.argv[4]) if len(sys.argv) > 4 else 12
out.mkdir(parents=True, exist_ok=True)
still = out / "start.png"
subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-s", f"{W}x{W}", "-i", "-", str(still)], input=disc(32, 32).tobytes(), check=True)


def frames(path):
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, W, W, 3).astype(int)


def displacement(path):
    fr = frames(path)
    seen = [(k, x) for k, x in ((k, red_x(f)) for k, f in enumerate(fr)) if x is not None]
    if len(seen) < 5:
        return float("nan")
    slope = np.polyfit([k for k, _ in seen], [x for _, x in seen], 1)[0]
    return float(slope * (len(fr) - 1))


results = {}
for mode in ("text", "image"):
    for side in ("left", "right"):
        dx = []
        for seed in range(seeds):
            video = out / f"{mode}-{side}-{seed}.mp4"
            cmd = [tessera, "generate", caption(side), "--model", model, "--no-extend",
                   "--seed", str(seed), "-o", str(video)]
            if mode == "image":
                cmd += ["--image", str(still)]
            subprocess.run(cmd, check=True, capture_output=True)
            dx.append(displacement(video))
        results[f"{mode}-{side}"] = dx
    left, right = np.array(results[f"{mode}-left"]), np.array(results[f"{mode}-right"])
    right_way = int(np.sum(left < -2) + np.sum(right > 2))
    print(f"{mode:5} 'left' {np.nanmean(left):+.1f} px, 'right' {np.nanmean(right):+.1f} px; "
          f"moved the captioned way in {right_way} of {2 * seeds}")
(out / "probe.json").write_text(json.dumps(results))
