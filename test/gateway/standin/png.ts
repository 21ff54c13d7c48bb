// Real (tiny) PNGs: pngjs encodes the pixels; the tEXt chunks SaveImage adds (PIL PngInfo.add_text:
// latin-1 text → tEXt, placed before the image data) are spliced in after IHDR.
import { PNG } from "pngjs";
import * as zlib from "zlib";

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

/** Deterministic pixels from a hex tag: a two-colour gradient, so different inputs give different files. */
export function encodePng(width: number, height: number, tagHex: string, texts: [string, string][], compressionLevel: number): Buffer {
  const png = new PNG({ width, height, colorType: 2, inputHasAlpha: false });
  const b = Buffer.from(tagHex.padEnd(12, "0").slice(0, 12), "hex");
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const t = width + height > 2 ? (x + y) / (width + height - 2) : 0;
      png.data[i] = Math.round(b[0] * (1 - t) + b[3] * t);
      png.data[i + 1] = Math.round(b[1] * (1 - t) + b[4] * t);
      png.data[i + 2] = Math.round(b[2] * (1 - t) + b[5] * t);
      png.data[i + 3] = 255;
    }
  }
  const raw = PNG.sync.write(png, { colorType: 2, deflateLevel: compressionLevel });
  return withTextChunks(raw, texts);
}

/** Inserts tEXt chunks right after IHDR (signature 8 bytes + IHDR 25 bytes). */
export function withTextChunks(png: Buffer, texts: [string, string][]): Buffer {
  if (texts.length === 0) return png;
  const head = png.subarray(0, 33);
  const rest = png.subarray(33);
  const extra = texts.map(([k, v]) => chunk("tEXt", Buffer.concat([Buffer.from(k, "latin1"), Buffer.from([0]), Buffer.from(v, "latin1")])));
  return Buffer.concat([head, ...extra, rest]);
}

/** tEXt chunks of a PNG, in file order (for tests and for /upload/mask, which keeps them). */
export function readTextChunks(png: Buffer): [string, string][] {
  const out: [string, string][] = [];
  let off = 8;
  while (off + 8 <= png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString("latin1", off + 4, off + 8);
    if (type === "tEXt") {
      const data = png.subarray(off + 8, off + 8 + len);
      const z = data.indexOf(0);
      out.push([data.toString("latin1", 0, z), data.toString("latin1", z + 1)]);
    }
    if (type === "IEND") break;
    off += 12 + len;
  }
  return out;
}

/** Width and height of a PNG, or undefined for anything else. */
export function pngSize(buf: Buffer): { width: number; height: number } | undefined {
  if (buf.length < 24 || buf.readUInt32BE(0) !== 0x89504e47 || buf.toString("latin1", 12, 16) !== "IHDR") return undefined;
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}
