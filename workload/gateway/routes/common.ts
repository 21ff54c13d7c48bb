import type { FastifyReply, FastifyRequest } from "fastify";
import { GatewayError } from "../protocol/errors";
import type { Services } from "../services";

declare module "fastify" {
  interface FastifyInstance {
    /** The gateway's shared services (store, files, discovery, the leader or the link to it). */
    gw: Services;
  }
}

/** JSON body regardless of Content-Type, as ComfyUI parses it. */
export function jsonBody<T = Record<string, unknown>>(req: FastifyRequest, { allowEmpty = false } = {}): T {
  const raw = req.body as Buffer | undefined;
  if (!raw || raw.length === 0) {
    if (allowEmpty) return {} as T;
    throw new GatewayError("GW_ERR_INVALID_JSON", "empty body");
  }
  try {
    return JSON.parse(raw.toString("utf8")) as T;
  } catch (err: unknown) {
    throw new GatewayError("GW_ERR_INVALID_JSON", (err as Error).message, { cause: err });
  }
}

export function emptyOk(reply: FastifyReply) {
  return reply.code(200).header("content-type", "text/plain; charset=utf-8").send("");
}

/** A path below a store root: relative, no `..`, no backslashes, no NUL. */
export function safeRelPath(p: string): boolean {
  if (p.startsWith("/") || p.includes("\\") || p.includes("\0") || /^[a-zA-Z]:/.test(p)) return false;
  return !p.split("/").some((s) => s === ".." || s === ".");
}

const MIME: Record<string, string> = {
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp", gif: "image/gif", json: "application/json",
  mp4: "video/mp4", webm: "video/webm", mp3: "audio/mpeg", wav: "audio/wav", flac: "audio/flac", txt: "text/plain", svg: "image/svg+xml",
};
/** ComfyUI /view: type from the extension, but never HTML/JS/CSS (served as octet-stream). */
export function viewMime(name: string): string {
  const ext = name.toLowerCase().split(".").pop() ?? "";
  return MIME[ext] ?? "application/octet-stream";
}
