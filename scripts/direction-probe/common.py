"""What the direction probe's clips and its measurement share."""
import numpy as np

W = 64
SLATE = (80, 90, 105)
CIRCLE = (210, 30, 40)
# Circle colours make_clips.py offers (the world's RGB for each word).
COLOURS = {"red": CIRCLE, "blue": (45, 75, 215), "green": (45, 170, 65),
           "yellow": (240, 225, 50)}
RADIUS = 9
YY, XX = np.mgrid[0:W, 0:W]


def caption(side, colour="red"):
    return (f"The background is plain slate. A large {colour} circle in the center moves "
            f"steadily to the {side}.")


def disc(x, y, rgb=CIRCLE):
    """One frame: a circle (red unless `rgb` says) centred at (x, y) px on slate."""
    frame = np.empty((W, W, 3), np.uint8)
    frame[:] = SLATE
    frame[(XX + 0.5 - x) ** 2 + (YY + 0.5 - y) ** 2 <= RADIUS ** 2] = rgb
    return frame


def red_x(frame):
    """x of the red pixels' centroid, or None when fewer than 6 are red."""
    m = (frame[..., 0] > 140) & (frame[..., 1] < 110) & (frame[..., 2] < 110)
    return (XX * m).sum() / m.sum() if m.sum() >= 6 else None
