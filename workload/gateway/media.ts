/**
 * The image operations of ComfyUI's file routes, done as ComfyUI's server.py does them with Pillow, here
 * with sharp (libvips): the mask editor's composite (`/upload/mask`), `/view?channel=` and `/view?preview=`.
 *
 * Read from server.py at v0.3.64 (Comfy-Org/ComfyUI@a125cd84, `upload_mask` and `view_image`) and unchanged
 * in the copies of v0.38-era server.py we could read (Comfy-Org/ComfyUI server.py @002c3fb9 and @5e14d797).
 * What Pillow does is matched on pixels (test/gateway/media.test.ts), not on bytes: both encoders write
 * different (equally valid) PNG/WebP/JPEG streams.
 */
import sharp, { type Metadata } from "sharp";
import { crc32, inflateSync } from "node:zlib";

// Long-lived server: no libvips operation cache (it only helps repeated identical pipelines), and one
// libvips worker thread per operation so a burst of previews cannot take every core from the event loop.
sharp.cache(false);
sharp.concurrency(1);

/**
 * Pillow refuses images over 2 × Image.MAX_IMAGE_PIXELS (89 478 485) as decompression bombs
 * (PIL/Image.py `_decompression_bomb_check`); the same ceiling here, so a 10 MB PNG that inflates to
 * gigabytes of pixels is refused before it is decoded.
 */
export const MAX_PIXELS = 2 * 89_478_485;

/** The largest file an image operation reads (a 16384² RGBA PNG is far below this). */
export const MAX_IMAGE_BYTES = 256 * 1024 * 1024;

/** Formats Pillow opens in ComfyUI's image (no SVG, PDF or other vector input: sharp could rasterise them, Pillow cannot). */
const RASTER = new Set(["png", "jpeg", "webp", "gif", "tiff"]);

/** Not an image Pillow would open (ComfyUI answers 500 there; the gateway says what is wrong). */
export class NotAnImage extends Error {}

/** A few concurrent image operations at most: each holds a decoded image in memory and a libuv thread. */
const MAX_RUNNING = 2;
let running = 0;
const waiting: (() => void)[] = [];
async function limited<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= MAX_RUNNING) await new Promise<void>((r) => waiting.push(r));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

// ---- PNG chunks (the text chunks Pillow keeps, and whether a PNG is RGBA) ----

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

interface Chunk { type: string; data: Buffer }

function pngChunks(buf: Buffer): Chunk[] | undefined {
  if (buf.length < 8 || !buf.subarray(0, 8).equals(PNG_SIGNATURE)) return undefined;
  const out: Chunk[] = [];
  for (let at = 8; at + 12 <= buf.length; ) {
    const len = buf.readUInt32BE(at);
    const type = buf.toString("latin1", at + 4, at + 8);
    if (at + 12 + len > buf.length) break; // truncated: what was read so far
    out.push({ type, data: buf.subarray(at + 8, at + 8 + len) });
    at += 12 + len;
    if (type === "IEND") break;
  }
  return out;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(data, crc32(Buffer.from(type, "latin1"))) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

/** A PNG text entry as Pillow keeps it: `itxt` when it came from an iTXt chunk (Pillow's `iTXt` str subclass). */
export interface PngText { key: string; value: string; itxt?: { lang: string; tkey: string } }

/**
 * Pillow's `PngImageFile.text`: every tEXt, zTXt and iTXt chunk (before and after the image data), in
 * file order, a later key replacing an earlier one (PIL/PngImagePlugin.py `chunk_tEXt`/`chunk_zTXt`/`chunk_iTXt`).
 */
export function pngText(buf: Buffer): PngText[] {
  const byKey = new Map<string, PngText>();
  for (const c of pngChunks(buf) ?? []) {
    try {
      if (c.type === "tEXt") {
        const z = c.data.indexOf(0);
        if (z < 0) continue;
        byKey.set(c.data.toString("latin1", 0, z), { key: c.data.toString("latin1", 0, z), value: c.data.toString("latin1", z + 1) });
      } else if (c.type === "zTXt") {
        const z = c.data.indexOf(0);
        if (z < 0 || c.data[z + 1] !== 0) continue;
        const key = c.data.toString("latin1", 0, z);
        byKey.set(key, { key, value: inflateSync(c.data.subarray(z + 2)).toString("latin1") });
      } else if (c.type === "iTXt") {
        const z = c.data.indexOf(0);
        if (z < 0) continue;
        const key = c.data.toString("latin1", 0, z);
        const compressed = c.data[z + 1] === 1;
        const l = c.data.indexOf(0, z + 3);
        const t = l < 0 ? -1 : c.data.indexOf(0, l + 1);
        if (t < 0) continue;
        const raw = c.data.subarray(t + 1);
        const value = (compressed ? inflateSync(raw) : raw).toString("utf8");
        byKey.set(key, { key, value, itxt: { lang: c.data.toString("latin1", z + 3, l), tkey: c.data.toString("utf8", l + 1, t) } });
      }
    } catch {
      // Pillow skips a text chunk it cannot decode (a bad zTXt stream): so do we.
    }
  }
  return [...byKey.values()];
}

/**
 * Pillow's `PngInfo.add_text(key, value)` for each entry (zip=False): an entry read from iTXt is written as
 * iTXt with its language and translated key; any other value as tEXt when it is Latin-1, else as iTXt.
 */
function textChunks(texts: PngText[]): Buffer[] {
  return texts.map((t) => {
    const latin1 = !t.itxt && [...t.value].every((ch) => ch.codePointAt(0)! <= 0xff);
    if (latin1) return chunk("tEXt", Buffer.concat([Buffer.from(t.key, "latin1"), Buffer.from([0]), Buffer.from(t.value, "latin1")]));
    const { lang, tkey } = t.itxt ?? { lang: "", tkey: "" };
    return chunk("iTXt", Buffer.concat([Buffer.from(t.key, "latin1"), Buffer.from([0, 0, 0]), Buffer.from(lang, "latin1"), Buffer.from([0]), Buffer.from(tkey, "utf8"), Buffer.from([0]), Buffer.from(t.value, "utf8")]));
  });
}

/** `png` with the text chunks put in before its first IDAT (where Pillow writes a PngInfo's chunks). */
function withText(png: Buffer, texts: PngText[]): Buffer {
  if (!texts.length) return png;
  const chunks = pngChunks(png)!;
  const parts: Buffer[] = [PNG_SIGNATURE];
  let added = false;
  for (const c of chunks) {
    if (c.type === "IDAT" && !added) {
      parts.push(...textChunks(texts));
      added = true;
    }
    parts.push(chunk(c.type, c.data));
  }
  return Buffer.concat(parts);
}

// ---- decoding as Pillow sees the image ----

interface Decoded {
  width: number;
  height: number;
  /** 8-bit RGBA, row-major. */
  rgba: Buffer;
  /** Pillow's mode is "RGBA". */
  modeRgba: boolean;
  /** Pillow's WebP writer keeps an alpha band (its mode has alpha, or transparency it converts to RGBA). */
  webpAlpha: boolean;
}

async function probe(buf: Buffer) {
  let meta: Metadata;
  try {
    meta = await sharp(buf, { limitInputPixels: MAX_PIXELS, failOn: "none" }).metadata();
  } catch (err: unknown) {
    throw new NotAnImage(`not an image: ${(err as Error).message}`);
  }
  if (!meta.format || !RASTER.has(meta.format)) throw new NotAnImage(`not a raster image Pillow opens (${meta.format ?? "unknown"})`);
  if ((meta.width ?? 0) * (meta.height ?? 0) > MAX_PIXELS) throw new NotAnImage(`image of ${meta.width}×${meta.height} pixels is over the ${MAX_PIXELS}-pixel limit`);
  return meta;
}

/**
 * Whether Pillow opens this as mode "RGBA" — what `view_image` tests (`img.mode == "RGBA"`) before taking
 * the alpha band: a PNG of colour type 6 (8 or 16 bit), a WebP with alpha, an RGB TIFF with an alpha sample.
 * A palette or grey+alpha PNG, or an RGB PNG with a tRNS colour, is "P"/"LA"/"RGB" there: `channel=a` of
 * it is opaque white and `channel=rgb` a plain conversion, as in ComfyUI.
 */
function pillowRgba(buf: Buffer, meta: Metadata): boolean {
  if (meta.format === "png") {
    const ihdr = pngChunks(buf)?.find((c) => c.type === "IHDR");
    return ihdr !== undefined && ihdr.data[9] === 6;
  }
  if (meta.format === "webp") return meta.hasAlpha === true;
  if (meta.format === "tiff") return meta.channels === 4 && meta.space === "srgb";
  return false;
}

/**
 * 8-bit RGBA pixels as Pillow's `convert("RGBA")` gives them: no colour management (Pillow ignores an ICC
 * profile), no EXIF rotation (Pillow does not apply it), 16-bit samples reduced to their high byte, the
 * first frame of an animation, alpha 255 where the image has none.
 */
async function decode(buf: Buffer): Promise<Decoded> {
  const meta = await probe(buf);
  const { data, info } = await sharp(buf, { limitInputPixels: MAX_PIXELS, ignoreIcc: true, failOn: "none" })
    .toColourspace("srgb")
    .ensureAlpha(1)
    .raw({ depth: "uchar" })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 4) throw new NotAnImage(`decoded to ${info.channels} channels`);
  // An RGB PNG with a tRNS colour stays "RGB" in Pillow, and its WebP writer takes RGB as it is (no alpha).
  const rgbWithTrns = meta.format === "png" && pngChunks(buf)?.find((c) => c.type === "IHDR")?.data[9] === 2;
  return { width: info.width, height: info.height, rgba: data, modeRgba: pillowRgba(buf, meta), webpAlpha: meta.hasAlpha === true && !rgbWithTrns };
}

const encode = (px: Buffer, width: number, height: number, channels: 3 | 4) => sharp(px, { raw: { width, height, channels } });

function dropAlpha(d: Decoded): Buffer {
  const out = Buffer.alloc(d.width * d.height * 3);
  for (let i = 0, o = 0; i < d.rgba.length; i += 4, o += 3) {
    out[o] = d.rgba[i];
    out[o + 1] = d.rgba[i + 1];
    out[o + 2] = d.rgba[i + 2];
  }
  return out;
}

// ---- the operations ----

/**
 * `/upload/mask` (server.py `upload_mask` → `image_save_function`): the original converted to RGBA, its
 * alpha replaced by the uploaded mask's alpha (`mask.convert("RGBA").getchannel("A")`, opaque where the
 * mask has none), saved as PNG at compression level 4 with the original's text chunks (the workflow).
 * A mask of another size is refused (Pillow's `putalpha` raises "images do not match": a 500 in ComfyUI).
 */
export async function compositeMask(original: Buffer, mask: Buffer): Promise<Buffer> {
  return limited(async () => {
    const o = await decode(original);
    const m = await decode(mask);
    if (o.width !== m.width || o.height !== m.height) throw new NotAnImage(`mask is ${m.width}×${m.height}, the original ${o.width}×${o.height}: sizes must match`);
    const px = Buffer.from(o.rgba);
    for (let i = 3; i < px.length; i += 4) px[i] = m.rgba[i];
    const png = await encode(px, o.width, o.height, 4).png({ compressionLevel: 4 }).toBuffer();
    return withText(png, pngChunks(original) ? pngText(original) : []);
  });
}

export type Derived = { body: Buffer; contentType: string };

/**
 * `/view` with `preview` or `channel` (server.py `view_image`), or undefined when the raw file is served
 * (no `preview`, and `channel` absent or anything but "rgb"/"a").
 *
 * - `preview=<format>[;<quality>]`: WebP, or JPEG when asked for "jpeg" and `channel` has no "a" in it;
 *   quality 90 unless the last `;` part is digits; RGB (alpha dropped) for JPEG or `channel=rgb`, else
 *   the image as it is (WebP keeps its alpha).
 * - `channel=rgb`: PNG of the colour bands (alpha dropped).
 * - `channel=a`: PNG, black with the image's alpha (opaque when Pillow's mode is not "RGBA").
 */
export async function viewVariant(file: Buffer, q: { preview?: string; channel?: string }): Promise<Derived | undefined> {
  const channel = q.channel ?? "rgba";
  if (q.preview === undefined && channel !== "rgb" && channel !== "a") return undefined;
  return limited(async () => {
    const d = await decode(file);
    if (q.preview !== undefined) {
      const parts = q.preview.split(";");
      let format = parts[0];
      if ((format !== "webp" && format !== "jpeg") || (q.channel ?? "").includes("a")) format = "webp";
      const last = parts[parts.length - 1];
      // Python's str.isdigit(): ASCII digits here; libjpeg and libwebp take 1…100 (Pillow passes larger values on and they clamp).
      const quality = /^[0-9]+$/.test(last) ? Math.min(100, Math.max(1, parseInt(last, 10))) : 90;
      const rgb = format === "jpeg" || q.channel === "rgb";
      const img = rgb || !d.webpAlpha ? encode(dropAlpha(d), d.width, d.height, 3) : encode(d.rgba, d.width, d.height, 4);
      const body = format === "jpeg" ? await img.jpeg({ quality }).toBuffer() : await img.webp({ quality }).toBuffer();
      return { body, contentType: `image/${format}` };
    }
    if (channel === "rgb") return { body: await encode(dropAlpha(d), d.width, d.height, 3).png().toBuffer(), contentType: "image/png" };
    const px = Buffer.alloc(d.width * d.height * 4);
    for (let i = 3; i < px.length; i += 4) px[i] = d.modeRgba ? d.rgba[i] : 255;
    return { body: await encode(px, d.width, d.height, 4).png().toBuffer(), contentType: "image/png" };
  });
}
