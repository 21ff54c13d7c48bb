import contentDisposition from "content-disposition";
import type { FastifyPluginAsync, FastifyRequest } from "fastify";
import { createHash, randomUUID } from "node:crypto";
import { createWriteStream, promises as fsp } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { compositeMask, MAX_IMAGE_BYTES, NotAnImage, viewVariant } from "../media";
import { GatewayError } from "../protocol/errors";
import type { Services } from "../services";
import { sha256Of } from "../store/objects";
import { safeRelPath } from "./common";

/** What /view shows in the browser: raster images, audio, video. Anything else is a download (see viewHeaders). */
const INLINE: Record<string, string> = {
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp", gif: "image/gif", bmp: "image/bmp", avif: "image/avif",
  mp4: "video/mp4", webm: "video/webm", mov: "video/quicktime", m4v: "video/mp4", mkv: "video/x-matroska",
  mp3: "audio/mpeg", wav: "audio/wav", flac: "audio/flac", ogg: "audio/ogg", opus: "audio/ogg", m4a: "audio/mp4", aac: "audio/aac",
};

/**
 * Uploads: only what ComfyUI's loaders read — images (LoadImage, masks), video and audio (LoadVideo,
 * LoadAudio), 3D models (Load3D's `3d/` subfolder). An .svg or .html in the input folder could run script
 * in the studio's origin when viewed; it is refused with the extension named.
 */
export const UPLOAD_EXTENSIONS = new Set([...Object.keys(INLINE), "tif", "tiff", "avi", "glb", "gltf", "obj", "fbx", "stl"]);

const ext = (name: string) => (name.includes(".") ? name.toLowerCase().split(".").pop()! : "");

/**
 * /view's headers: media inline with its type; everything else `application/octet-stream` as an
 * attachment; never sniffed, and sandboxed should anything be opened as a page (ComfyUI serves an .svg
 * inline as image/svg+xml, which runs script in the site's origin: server.py `view_image`).
 */
export function viewHeaders(filename: string): Record<string, string> {
  const type = INLINE[ext(filename)];
  return {
    "content-type": type ?? "application/octet-stream",
    "content-disposition": contentDisposition(filename, { type: type ? "inline" : "attachment" }),
    "x-content-type-options": "nosniff",
    "content-security-policy": "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'",
  };
}

function typeStore(gw: Services, type: string) {
  if (type === "output") return gw.files.output;
  if (type === "input") return gw.files.input;
  if (type === "temp") return gw.files.temp;
  return undefined;
}

/**
 * ComfyUI /view's path rules (server.py view_image): a name starting with "/" or containing ".." → 400;
 * the subfolder is joined as the OS would (empty segments and "." vanish) and may not leave the root → 403.
 * Returns the store key, or the status to answer.
 */
export function viewKey(filename: string, subfolder: string | undefined): string | number {
  if (filename.startsWith("/") || filename.includes("..") || filename.includes("\\")) return 400;
  // A NUL makes os.path.isfile false in ComfyUI: a plain 404.
  if (filename.includes("\0") || (subfolder ?? "").includes("\0")) return 404;
  const base = filename.split("/").pop()!; // os.path.basename
  if (!base) return 404;
  const segs: string[] = [];
  for (const s of (subfolder ?? "").split("/")) {
    if (s === "" || s === ".") continue;
    if (s === ".." || s.includes("\\")) return 403;
    segs.push(s);
  }
  return [...segs, base].join("/");
}

/** ComfyUI's /view, /upload/image and /upload/mask over the gateway's object stores (every replica). */
export const fileRoutes: FastifyPluginAsync = async (app) => {
  const gw = app.gw;

  app.get("/view", async (req, reply) => {
    const q = req.query as Record<string, string | undefined>;
    let filename = q.filename;
    if (!filename) return reply.code(404).send("");
    let type = q.type ?? "output";
    const m = /^(.*) \[(output|input|temp)\]$/.exec(filename);
    if (m) {
      filename = m[1];
      type = m[2];
    }
    const key = viewKey(filename, q.subfolder);
    if (typeof key === "number") return reply.code(key).send("");
    const store = typeStore(gw, type);
    if (!store) return reply.code(400).send("");
    // Outputs and previews belong to the prompt's owner (another user's answer as missing); inputs are shared.
    const file = type === "input" ? await store.stream(key) : await gw.outputFile(req.caller, type as "output" | "temp", key);
    if (!file) return reply.code(404).send("");
    const name = key.split("/").pop()!;
    // ComfyUI's derived views (server.py view_image): a re-encoded preview, or one channel as PNG.
    if (q.preview !== undefined || q.channel === "rgb" || q.channel === "a") {
      const derived = await viewVariant(await readAll(file.body, file.size), { preview: q.preview, channel: q.channel }).catch((err: unknown) => {
        if (err instanceof NotAnImage) throw new GatewayError("GW_ERR_BAD_TYPE", `${name}: ${err.message}`);
        throw err;
      });
      if (derived) {
        // Raster pixels only, so inline is safe; named as ComfyUI names it (the stored file's name).
        return reply.headers({ ...viewHeaders(name), "content-type": derived.contentType, "content-disposition": contentDisposition(name, { type: "inline" }), "content-length": String(derived.body.length) }).send(derived.body);
      }
    }
    return reply.headers({ ...viewHeaders(name), "content-length": String(file.size) }).send(file.body);
  });

  const upload = async (req: FastifyRequest, mask: boolean) => {
    const got = await receive(req, gw.maxUploadBytes);
    try {
      const { fields, file } = got;
      const type = fields.type || "input";
      if (type !== "input") throw new GatewayError("GW_ERR_BAD_PATH", `upload type ${type} is not supported (input only)`);
      const subfolder = fields.subfolder ?? "";
      const overwrite = ["true", "1"].includes((fields.overwrite ?? "").toLowerCase());
      const name = file.name;
      if (!safeRelPath(name) || name.includes("/") || (subfolder && !safeRelPath(subfolder))) throw new GatewayError("GW_ERR_BAD_PATH", `${subfolder}/${name}`);
      if (!UPLOAD_EXTENSIONS.has(ext(name))) throw new GatewayError("GW_ERR_BAD_TYPE", `.${ext(name) || "(none)"} (${name}); allowed: ${[...UPLOAD_EXTENSIONS].sort().join(", ")}`);
      // ComfyUI writes the composite in the format the name's extension says; every mask editor names it .png.
      if (mask && ext(name) !== "png") throw new GatewayError("GW_ERR_BAD_TYPE", `a mask is saved as PNG: ${name} must end in .png`);
      const dot = name.lastIndexOf(".");
      const [stem, suffix] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
      const at = (n: string) => (subfolder ? `${subfolder}/${n}` : n);
      let final = name;
      let duplicate = false;
      if (!overwrite) {
        // ComfyUI: identical bytes reuse the name, different bytes get "name (1).ext", "name (2).ext" …
        for (let i = 1; ; i++) {
          const existing = await sha256Of(gw.files.input, at(final));
          if (existing === undefined) break;
          if (existing === file.sha256) {
            duplicate = true;
            break;
          }
          final = `${stem} (${i})${suffix}`;
        }
      }
      // As ComfyUI, the duplicate test compares the stored file with the bytes uploaded (for a mask too,
      // though what a mask upload stores is the composite): identical bytes reuse the name, nothing is written.
      if (!duplicate && mask) {
        const composite = await compositeOf(req, fields.original_ref, file.path);
        const target = path.join(got.dir, "composite.png");
        await fsp.writeFile(target, composite);
        await gw.files.input.putFile(at(final), target, { sha256: createHash("sha256").update(composite).digest("hex") });
      } else if (!duplicate) await gw.files.input.putFile(at(final), file.path, { sha256: file.sha256 });
      req.auditTarget = `input/${at(final)}`;
      return { name: final, subfolder, type };
    } finally {
      await fsp.rm(got.dir, { recursive: true, force: true });
    }
  };
  /**
   * server.py `upload_mask`'s `image_save_function`: `original_ref` names the image the mask was painted
   * on (`{"filename", "subfolder", "type"}`, type "output" by default, a " [type]" suffix on the name wins);
   * the result is that image with the mask's alpha. Where ComfyUI's checks return a status that
   * `image_upload` then ignores (it answers 200 and writes nothing), the gateway answers that status.
   */
  const compositeOf = async (req: FastifyRequest, ref: string | undefined, maskPath: string): Promise<Buffer> => {
    let o: { filename?: unknown; subfolder?: unknown; type?: unknown };
    try {
      o = JSON.parse(ref ?? "") as typeof o;
    } catch {
      throw new GatewayError("GW_ERR_BAD_PATH", "original_ref must be JSON: {\"filename\", \"subfolder\", \"type\"}");
    }
    if (!o || typeof o !== "object" || typeof o.filename !== "string") throw new GatewayError("GW_ERR_BAD_PATH", "original_ref.filename is missing");
    let filename = o.filename;
    let type = typeof o.type === "string" ? o.type : "output";
    const m = /^(.*) \[(output|input|temp)\]$/.exec(filename);
    if (m) [filename, type] = [m[1], m[2]];
    if (!filename || filename.startsWith("/") || filename.includes("..") || filename.includes("\\") || filename.includes("\0")) throw new GatewayError("GW_ERR_BAD_PATH", `original_ref.filename ${JSON.stringify(filename)}`);
    if (type !== "output" && type !== "input" && type !== "temp") throw new GatewayError("GW_ERR_BAD_PATH", `original_ref.type ${JSON.stringify(type)}`);
    const segs: string[] = [];
    for (const s of `${typeof o.subfolder === "string" ? o.subfolder : ""}/${filename}`.split("/")) {
      if (s === "" || s === ".") continue;
      if (s === ".." || s.includes("\\") || s.includes("\0")) throw new GatewayError("GW_ERR_FORBIDDEN", "original_ref.subfolder leaves its folder");
      segs.push(s);
    }
    const key = segs.join("/");
    // The original is read as /view reads it: another user's output is as missing as an absent file.
    const file = type === "input" ? await gw.files.input.stream(key) : await gw.outputFile(req.caller, type, key);
    if (!file) throw new GatewayError("GW_ERR_NOT_FOUND", `original_ref ${type}/${key}`);
    try {
      return await compositeMask(await readAll(file.body, file.size), await fsp.readFile(maskPath));
    } catch (err: unknown) {
      if (err instanceof NotAnImage) throw new GatewayError("GW_ERR_BAD_TYPE", err.message);
      throw err;
    }
  };

  app.post("/upload/image", (req) => upload(req, false));
  app.post("/upload/mask", (req) => upload(req, true));
};

/** A stored file whole, for an image operation (bounded: an image op decodes it in memory anyway). */
async function readAll(body: Readable, size: number): Promise<Buffer> {
  if (size > MAX_IMAGE_BYTES) {
    body.destroy();
    throw new GatewayError("GW_ERR_BAD_TYPE", `file of ${size} bytes is over the ${MAX_IMAGE_BYTES}-byte limit of image operations`);
  }
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/**
 * The multipart body, streamed: the `image` part goes to a temporary file (hashed on the way), never
 * into memory whole; other fields are collected. Over the size limit → 413.
 */
async function receive(req: FastifyRequest, limit: number): Promise<{ dir: string; fields: Record<string, string>; file: { name: string; path: string; sha256: string; size: number } }> {
  if (!req.isMultipart()) throw new GatewayError("GW_ERR_BAD_PATH", "expected multipart/form-data");
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "gw-upload-"));
  const fields: Record<string, string> = {};
  let file: { name: string; path: string; sha256: string; size: number } | undefined;
  try {
    // preservePath: the name as the client sent it, so "../x.png" is refused as ComfyUI refuses it, not trimmed.
    for await (const part of req.parts({ preservePath: true, limits: { fileSize: limit, files: 4, fields: 20, fieldSize: 64 * 1024 } })) {
      if (part.type === "field") {
        fields[part.fieldname] = String(part.value);
        continue;
      }
      if (part.fieldname !== "image" || file) {
        part.file.resume();
        continue;
      }
      const target = path.join(dir, randomUUID());
      const hash = createHash("sha256");
      let size = 0;
      const tap = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          size += chunk.length;
          done(null, chunk);
        },
      });
      await pipeline(part.file, tap, createWriteStream(target));
      if (part.file.truncated) throw Object.assign(new Error(`upload larger than ${limit} bytes`), { statusCode: 413 });
      file = { name: part.filename, path: target, sha256: hash.digest("hex"), size };
    }
  } catch (err: unknown) {
    await fsp.rm(dir, { recursive: true, force: true });
    if ((err as { code?: string }).code === "FST_REQ_FILE_TOO_LARGE") throw Object.assign(new Error(`upload larger than ${limit} bytes`), { statusCode: 413 });
    if (err instanceof GatewayError || (err as { statusCode?: number }).statusCode === 413) throw err;
    throw new GatewayError("GW_ERR_BAD_PATH", `malformed multipart body: ${(err as Error).message}`, { cause: err });
  }
  if (!file || !file.name) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw new GatewayError("GW_ERR_BAD_PATH", "no image file");
  }
  return { dir, fields, file };
}
