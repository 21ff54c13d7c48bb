"""Reference outputs for test/gateway/media.test.ts, made by Pillow.

ComfyUI's server.py does its image work with Pillow: `upload_mask` (the mask's alpha onto the original)
and `view_image` (`channel=rgb|a`, `preview=<format>;<quality>`). This script builds small inputs with
known pixels, applies those operations with Pillow as server.py describes them (v0.3.64 @a125cd84,
unchanged in the v0.38-era copies read), and writes inputs and results next to it with cases.json.
The gateway does the same with sharp; the test compares decoded pixels.

Run: python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow==12.3.0 && /tmp/pil/bin/python generate.py
"""
import io
import json
import os
import zlib

import PIL
from PIL import Image
from PIL.PngImagePlugin import PngInfo

HERE = os.path.dirname(os.path.abspath(__file__))
W, H = 7, 5


def px(x, y, salt):
    return ((x * 37 + y * 11 + salt) % 256, (x * 5 + y * 53 + salt * 3) % 256, (x * 91 + y * 7 + salt * 7) % 256)


def alpha(x, y, salt):
    return (x * 40 + y * 23 + salt) % 256


def rgba_image(salt):
    im = Image.new("RGBA", (W, H))
    im.putdata([px(x, y, salt) + (alpha(x, y, salt),) for y in range(H) for x in range(W)])
    return im


def save(im, name, **kw):
    im.save(os.path.join(HERE, name), **kw)
    return name


def inputs():
    made = {}
    info = PngInfo()
    info.add_text("prompt", '{"9": {"class_type": "SaveImage"}}')
    info.add_itxt("workflow", '{"title": "猫 workflow"}', lang="", tkey="")
    made["rgba"] = save(rgba_image(1), "in-rgba.png", pnginfo=info)
    # A zTXt chunk as well (Pillow reads it back as text and writes it as tEXt).
    raw = open(os.path.join(HERE, made["rgba"]), "rb").read()
    z = b"comment\x00\x00" + zlib.compress(b"zipped text")
    chunk = len(z).to_bytes(4, "big") + b"zTXt" + z + zlib.crc32(b"zTXt" + z).to_bytes(4, "big")
    at = raw.index(b"IDAT") - 4
    open(os.path.join(HERE, made["rgba"]), "wb").write(raw[:at] + chunk + raw[at:])
    made["rgb"] = save(rgba_image(2).convert("RGB"), "in-rgb.png")
    la = Image.new("LA", (W, H))
    la.putdata([(px(x, y, 3)[0], alpha(x, y, 3)) for y in range(H) for x in range(W)])
    made["la"] = save(la, "in-la.png")
    p = Image.new("P", (W, H))
    p.putpalette([v for i in range(16) for v in px(i, i, 4)])
    p.putdata([(x + y) % 16 for y in range(H) for x in range(W)])
    made["p_trns"] = save(p, "in-p-trns.png", transparency=bytes([0, 40, 255, 128] * 4))
    made["jpeg"] = save(rgba_image(5).convert("RGB"), "in.jpg", quality=95)
    made["webp_alpha"] = save(rgba_image(6), "in-alpha.webp", lossless=True)
    made["mask_rgba"] = save(rgba_image(7), "mask-rgba.png")
    made["mask_l"] = save(rgba_image(8).convert("L"), "mask-l.png")
    made["mask_la"] = save(la.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "mask-la.png")
    return made


def composite(original, mask, out):
    """The mask editor's upload: the original as RGBA with the mask's alpha, its text chunks kept, PNG level 4."""
    with Image.open(os.path.join(HERE, original)) as o:
        meta = PngInfo()
        for k, v in getattr(o, "text", {}).items():
            meta.add_text(k, v)
        o = o.convert("RGBA")
        m = Image.open(os.path.join(HERE, mask)).convert("RGBA")
        o.putalpha(m.getchannel("A"))
        o.save(os.path.join(HERE, out), compress_level=4, pnginfo=meta)


def view(src, query, out):
    """/view with `channel` and/or `preview`: returns the content type, or None for the raw file."""
    with Image.open(os.path.join(HERE, src)) as img:
        channel = query.get("channel")
        if "preview" in query:
            parts = query["preview"].split(";")
            fmt = parts[0]
            if fmt not in ("webp", "jpeg") or "a" in (channel or ""):
                fmt = "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            if fmt == "jpeg" or channel == "rgb":
                img = img.convert("RGB")
            buf = io.BytesIO()
            img.save(buf, format=fmt, quality=quality)
            open(os.path.join(HERE, out), "wb").write(buf.getvalue())
            return "image/" + fmt
        channel = channel or "rgba"
        if channel == "rgb":
            res = Image.merge("RGB", img.split()[:3]) if img.mode == "RGBA" else img.convert("RGB")
        elif channel == "a":
            a = img.split()[3] if img.mode == "RGBA" else Image.new("L", img.size, 255)
            res = Image.new("RGBA", img.size)
            res.putalpha(a)
        else:
            return None
        res.save(os.path.join(HERE, out), format="PNG")
        return "image/png"


def main():
    made = inputs()
    cases = {"pillow": PIL.__version__, "masks": [], "views": []}
    for o, m in [("rgba", "mask_rgba"), ("rgb", "mask_la"), ("p_trns", "mask_rgba"), ("rgba", "mask_l"), ("jpeg", "mask_rgba"), ("la", "mask_la")]:
        out = f"out-mask-{o}-{m}.png"
        composite(made[o], made[m], out)
        cases["masks"].append({"original": made[o], "mask": made[m], "expected": out})
    queries = [
        {"channel": "rgb"}, {"channel": "a"}, {"channel": "rgba"}, {"channel": "x"},
        {"preview": "webp;90"}, {"preview": "jpeg;80"}, {"preview": "webp", "channel": "rgb"},
        {"preview": "jpeg;50", "channel": "a"}, {"preview": "png"}, {"preview": "jpeg;95", "channel": "rgb"},
    ]
    for name in ["rgba", "rgb", "la", "p_trns", "jpeg", "webp_alpha"]:
        for i, q in enumerate(queries):
            out = f"out-view-{name}-{i}.bin"
            ctype = view(made[name], q, out)
            cases["views"].append({"file": made[name], "query": q, "contentType": ctype, "expected": out if ctype else None})
    json.dump(cases, open(os.path.join(HERE, "cases.json"), "w"), indent=1, ensure_ascii=False)


main()
