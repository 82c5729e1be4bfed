"""What the direction probe's clips and its measurement share."""
import numpy as np

W = 64
SLATE = (80, 90, 105)
CIRCLE = (210, 30, 40)
RADIUS = 9
YY, XX = np.mgrid[0:W, 0:W]


def caption(side):
    return ("The background is plain slate. A large red circle in the center moves steadily "
            f"to the {side}.")


def disc(x, y):
    """One frame: the red circle centred at (x, y) px on slate."""
    frame = np.empty((W, W, 3), np.uint8)
    frame[:] = SLATE
    frame[(XX + 0.5 - x) ** 2 + (YY + 0.5 - y) ** 2 <= RADIUS ** 2] = CIRCLE
    return frame


def red_x(frame):
    """x of the red pixels' centroid, or None when fewer than 6 are red."""
    m = (frame[..., 0] > 140) & (frame[..., 1] < 110) & (frame[..., 2] < 110)
    return (XX * m).sum() / m.sum() if m.sum() >= 6 else None
