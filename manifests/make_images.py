"""Draw the six example images of ``manifests/example.yaml`` into ``manifests/images/``.

Each is a small procedural scene (512x384 PNG, well under 100 KB) with its own palette, so a
video's first frame can be matched to its image by eye or by colour. Drawing is deterministic
(fixed seeds): rerunning the script with the same Pillow gives the same bytes, hence the same
item keys. Run: ``.venv/bin/python manifests/make_images.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

W, H = 512, 384
HERE = Path(__file__).resolve().parent
RGB = tuple[int, int, int]


def gradient(top: RGB, bottom: RGB, height: int = H) -> Image.Image:
    """A vertical gradient from ``top`` to ``bottom``, one colour per row (compresses well)."""
    image = Image.new("RGB", (W, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(height - 1, 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (W, y)], fill=colour)
    return image


def pine(draw: ImageDraw.ImageDraw, x: int, base: int, height: int, colour: RGB) -> None:
    """A pine tree: a trunk and three stacked triangles."""
    width = height // 3
    draw.rectangle([x - 2, base - height // 6, x + 2, base], fill=colour)
    for tier in range(3):
        top = base - height + tier * height // 4
        bottom = top + height // 2
        half = width // 2 + tier * width // 5
        draw.polygon([(x, top), (x - half, bottom), (x + half, bottom)], fill=colour)


def forest() -> Image.Image:
    """A misty forest in grey-green layers with a deer silhouette in a clearing."""
    rng = random.Random(1)
    image = gradient((196, 214, 200), (120, 150, 120))
    layers = [((150, 175, 155), 250, 110), ((95, 125, 100), 300, 150), ((45, 70, 50), 370, 210)]
    for colour, base, height in layers:
        draw = ImageDraw.Draw(image)
        for x in range(-10, W + 30, 34):
            if 190 < x < 330 and height > 200:
                continue  # leave a clearing for the deer
            pine(draw, x + rng.randint(-8, 8), base, height + rng.randint(-20, 20), colour)
        fog = Image.new("RGB", (W, H), (225, 232, 226))
        mask = Image.new("L", (W, H), 0)
        ImageDraw.Draw(mask).rectangle([0, base - 60, W, base + 10], fill=90)
        image = Image.composite(fog, image, mask.filter(ImageFilter.GaussianBlur(18)))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 360, W, H], fill=(40, 60, 42))
    deer = (30, 28, 26)
    draw.ellipse([220, 290, 300, 330], fill=deer)  # body
    for x in (228, 240, 282, 292):
        draw.line([(x, 320), (x + 2, 362)], fill=deer, width=5)  # legs
    draw.polygon([(285, 300), (298, 262), (310, 266), (300, 308)], fill=deer)  # neck
    draw.ellipse([296, 252, 322, 270], fill=deer)  # head
    draw.line([(306, 254), (300, 230), (292, 222)], fill=deer, width=3)  # antlers
    draw.line([(300, 236), (310, 226)], fill=deer, width=3)
    draw.line([(312, 254), (318, 232), (328, 224)], fill=deer, width=3)
    return image


def lighthouse() -> Image.Image:
    """A red-and-white lighthouse on rocks, its beam over an orange sunset sea."""
    image = gradient((70, 40, 110), (250, 150, 60), 250)
    full = Image.new("RGB", (W, H))
    full.paste(image, (0, 0))
    draw = ImageDraw.Draw(full)
    draw.ellipse([120, 200, 220, 300], fill=(255, 210, 90))  # the sun, half set
    full.paste(gradient((40, 50, 100), (15, 20, 50), H - 250), (0, 250))
    draw = ImageDraw.Draw(full)
    for y in range(258, H, 9):  # the sun's reflection
        half = 40 - (y - 258) // 5
        draw.line([(170 - half, y), (170 + half, y)], fill=(240, 160, 70), width=3)
    draw.polygon(
        [(300, H), (330, 300), (380, 280), (450, 290), (512, 320), (512, H)], fill=(35, 25, 30)
    )
    stripes = [(230, 40, 40), (245, 245, 240)]
    for band in range(6):  # the tower, narrowing upward in red and white bands
        y0, y1 = 280 - band * 25, 280 - (band + 1) * 25
        w0, w1 = 24 - band * 2, 24 - (band + 1) * 2
        draw.polygon(
            [(400 - w0, y0), (400 + w0, y0), (400 + w1, y1), (400 - w1, y1)], fill=stripes[band % 2]
        )
    draw.rectangle([384, 112, 416, 130], fill=(255, 240, 150))  # the lamp
    draw.polygon([(390, 112), (410, 112), (400, 98)], fill=(40, 30, 30))
    beam = Image.new("L", (W, H), 0)
    ImageDraw.Draw(beam).polygon([(392, 121), (0, 60), (0, 170)], fill=110)
    return Image.composite(Image.new("RGB", (W, H), (255, 245, 190)), full, beam)


def city() -> Image.Image:
    """A city skyline at night: lit windows, a moon and stars, reflected in the river."""
    rng = random.Random(3)
    image = gradient((8, 10, 35), (40, 30, 80))
    draw = ImageDraw.Draw(image)
    for _ in range(70):
        x, y = rng.randrange(W), rng.randrange(200)
        draw.point([(x, y), (x + 1, y)], fill=(255, 255, 230))
    draw.ellipse([400, 40, 450, 90], fill=(245, 240, 210))
    draw.ellipse([414, 34, 464, 84], fill=(12, 14, 42))  # a crescent moon
    x = 0
    while x < W:
        width, height = rng.randint(30, 60), rng.randint(90, 230)
        shade = rng.randint(20, 45)
        draw.rectangle([x, 300 - height, x + width - 3, 300], fill=(shade, shade, shade + 25))
        for wy in range(300 - height + 8, 292, 12):
            for wx in range(x + 5, x + width - 8, 9):
                if rng.random() < 0.45:
                    draw.rectangle([wx, wy, wx + 4, wy + 6], fill=(255, 215, 90))
        x += width
    water = image.crop((0, 216, W, 300)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    water = Image.blend(water, Image.new("RGB", water.size, (10, 15, 50)), 0.55)
    image.paste(water.resize((W, H - 300)), (0, 300))
    return image


def mountains() -> Image.Image:
    """Snow-capped mountains over a calm turquoise lake that mirrors them."""
    image = gradient((90, 160, 230), (200, 230, 250), 230)
    draw = ImageDraw.Draw(image)
    draw.ellipse([60, 40, 110, 90], fill=(255, 250, 220))
    peaks = [(-40, 230, 120, 70, 260), (150, 230, 280, 40, 420), (330, 230, 440, 90, 560)]
    for left, base, apex_x, apex_y, right in peaks:
        draw.polygon([(left, base), (apex_x, apex_y), (right, base)], fill=(95, 105, 130))
        snow_y = apex_y + (base - apex_y) // 3
        sl = apex_x - (apex_x - left) * (snow_y - apex_y) // (base - apex_y)
        sr = apex_x + (right - apex_x) * (snow_y - apex_y) // (base - apex_y)
        snow = [(sl, snow_y), (apex_x, apex_y), (sr, snow_y), (apex_x + 10, snow_y - 12)]
        draw.polygon([*snow, (apex_x - 8, snow_y + 6)], fill=(250, 250, 255))
    draw.rectangle([0, 215, W, 230], fill=(60, 120, 60))  # the far shore
    full = Image.new("RGB", (W, H))
    full.paste(image, (0, 0))
    mirror = image.crop((0, 76, W, 230)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    mirror = Image.blend(mirror, Image.new("RGB", mirror.size, (40, 150, 160)), 0.45)
    full.paste(mirror, (0, 230))
    draw = ImageDraw.Draw(full)
    for y in range(240, H, 14):  # ripples
        draw.line([(40 + y % 60, y), (140 + y % 60, y)], fill=(150, 210, 215), width=1)
    return full


def sailboat() -> Image.Image:
    """A white sailboat on a bright blue sea under puffy clouds, with gulls."""
    rng = random.Random(5)
    image = gradient((120, 190, 245), (190, 225, 250), 220)
    full = Image.new("RGB", (W, H))
    full.paste(image, (0, 0))
    full.paste(gradient((30, 120, 190), (10, 60, 130), H - 220), (0, 220))
    draw = ImageDraw.Draw(full)
    for cx, cy in ((90, 70), (330, 50), (440, 110)):
        for dx, dy, r in ((0, 0, 26), (24, -10, 30), (50, 0, 24), (26, 8, 26)):
            draw.ellipse([cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r], fill=(250, 250, 252))
    for _ in range(40):  # wave crests
        x, y = rng.randrange(W), rng.randrange(232, H)
        draw.arc([x, y, x + 24, y + 8], 200, 340, fill=(200, 230, 250), width=2)
    draw.polygon([(180, 300), (340, 300), (315, 325), (200, 325)], fill=(150, 60, 40))  # hull
    draw.line([(262, 300), (262, 130)], fill=(80, 60, 50), width=4)  # mast
    draw.polygon([(266, 135), (266, 292), (345, 292)], fill=(252, 252, 245))  # mainsail
    draw.polygon([(258, 150), (258, 292), (195, 292)], fill=(250, 215, 80))  # jib
    for gx, gy in ((120, 150), (150, 135), (400, 170)):
        draw.line([(gx - 10, gy - 4), (gx, gy), (gx + 10, gy - 4)], fill=(40, 40, 50), width=2)
    return full


def balloon() -> Image.Image:
    """A striped hot-air balloon over a patchwork of fields and a winding road."""
    image = gradient((130, 200, 250), (230, 240, 250), 200)
    full = Image.new("RGB", (W, H))
    full.paste(image, (0, 0))
    draw = ImageDraw.Draw(full)
    fields = [(110, 170, 60), (200, 190, 70), (80, 140, 50), (160, 120, 60), (140, 190, 90)]
    for row in range(4):
        y0, y1 = 200 + row * row * 12 + row * 10, 200 + (row + 1) ** 2 * 12 + (row + 1) * 10
        for col in range(-3, 8):

            def x_at(y: int, c: int) -> float:
                return W / 2 + (c * 90 - W / 2 + 45) * (0.6 + (y - 200) / 250)

            colour = fields[(row * 3 + col) % len(fields)]
            draw.polygon(
                [
                    (x_at(y0, col), y0),
                    (x_at(y0, col + 1), y0),
                    (x_at(y1, col + 1), y1),
                    (x_at(y1, col), y1),
                ],
                fill=colour,
            )
    draw.line([(256, 200), (230, 260), (300, 320), (250, H)], fill=(210, 200, 170), width=6)
    envelope = Image.new("RGB", (140, 160))
    stripes = [(230, 50, 50), (250, 200, 40), (40, 120, 220), (250, 250, 245), (60, 180, 90)]
    band = 140 // 7
    for i in range(7):
        ImageDraw.Draw(envelope).rectangle([i * band, 0, (i + 1) * band, 160], fill=stripes[i % 5])
    mask = Image.new("L", (140, 160), 0)
    ImageDraw.Draw(mask).ellipse([0, 0, 139, 130], fill=255)
    ImageDraw.Draw(mask).polygon([(18, 95), (122, 95), (85, 158), (55, 158)], fill=255)
    full.paste(envelope, (260, 30), mask)
    draw.line([(318, 188), (322, 210)], fill=(60, 40, 30), width=2)
    draw.line([(342, 188), (338, 210)], fill=(60, 40, 30), width=2)
    draw.rectangle([317, 208, 343, 228], fill=(140, 90, 40))  # the basket
    return full


SCENES: dict[str, Callable[[], Image.Image]] = {
    "forest-deer.png": forest,
    "lighthouse.png": lighthouse,
    "city-night.png": city,
    "mountain-lake.png": mountains,
    "sailboat.png": sailboat,
    "balloon.png": balloon,
}


def main() -> None:
    """Draw every scene into ``manifests/images/``, printing each file's size."""
    out = HERE / "images"
    out.mkdir(exist_ok=True)
    for name, draw_scene in SCENES.items():
        target = out / name
        draw_scene().save(target, optimize=True)
        print(f"{target.relative_to(HERE.parent)}: {target.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
