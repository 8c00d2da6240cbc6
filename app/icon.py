"""The app's page icon, drawn here: no icon font or emoji fetched from the internet.

Streamlit turns a ``:material/...:`` page icon into a favicon URL on fonts.gstatic.com, which
an offline or firewalled group server cannot reach; an image is served by the app itself.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def page_icon():
    """A 64×64 PIL image: a spectrum (continuum with absorption and an emission line) on blue."""
    import math

    from PIL import Image, ImageDraw

    size = 64
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=12, fill=(31, 84, 160, 255))
    points = []
    for i in range(6, size - 5):
        t = (i - 6) / (size - 12)
        y = 40 - 10 * t + 12 * math.exp(-((t - 0.3) / 0.035) ** 2) \
            - 18 * math.exp(-((t - 0.7) / 0.03) ** 2)
        points.append((i, y))
    draw.line(points, fill=(255, 255, 255, 255), width=3, joint="curve")
    return image
