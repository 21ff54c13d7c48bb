import type { FastifyInstance, FastifyRequest } from "fastify";
import type { GatewayContext } from "../context";
import { GatewayError } from "../protocol/errors";
import { both, safeRelPath, viewMime } from "./common";

function typeStore(ctx: GatewayContext, type: string) {
  if (type === "output") return ctx.files.output;
  if (type === "input") return ctx.files.input;
  if (type === "temp") return ctx.files.temp;
  return undefined;
}

async function formOf(req: FastifyRequest): Promise<FormData> {
  const ct = req.headers["content-type"] ?? "";
  if (!ct.startsWith("multipart/form-data")) throw new GatewayError("GW_ERR_BAD_PATH", "expected multipart/form-data");
  try {
    // Node's own WHATWG multipart parser (undici), on the size-limited body.
    return await new Response(new Uint8Array(req.body as Buffer), { headers: { "content-type": ct } }).formData();
  } catch (err: unknown) {
    throw new GatewayError("GW_ERR_BAD_PATH", "malformed multipart body", { cause: err });
  }
}

export function fileRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  both(app, "GET", "/view", async (req, reply) => {
    const q = req.query as Record<string, string | undefined>;
    let filename = q.filename;
    if (!filename) return reply.code(404).send("");
    let type = q.type ?? "output";
    const m = /^(.*) \[(output|input|temp)\]$/.exec(filename);
    if (m) {
      filename = m[1];
      type = m[2];
    }
    // ComfyUI /view: a leading "/" or ".." in the name → 400; a subfolder escaping the root → 403.
    if (filename.startsWith("/") || filename.includes("..") || filename.includes("\\")) return reply.code(400).send("");
    const sub = q.subfolder ?? "";
    if (sub && !safeRelPath(sub)) return reply.code(403).send("");
    const store = typeStore(ctx, type);
    if (!store) return reply.code(400).send("");
    const key = sub ? `${sub}/${filename}` : filename;
    const body = await store.get(key);
    if (!body) return reply.code(404).send("");
    return reply.type(viewMime(filename)).header("content-disposition", `filename="${filename.replace(/"/g, "")}"`).send(body);
  });

  const upload = async (req: FastifyRequest) => {
    ctx.requireLeader();
    const form = await formOf(req);
    const file = form.get("image");
    if (!file || typeof file === "string" || !file.name) throw new GatewayError("GW_ERR_BAD_PATH", "no image file");
    const type = String(form.get("type") ?? "input") || "input";
    if (type !== "input") throw new GatewayError("GW_ERR_BAD_PATH", `upload type ${type} is not supported (input only)`);
    const subfolder = String(form.get("subfolder") ?? "");
    const overwrite = ["true", "1"].includes(String(form.get("overwrite") ?? "").toLowerCase());
    const name = file.name;
    if (!safeRelPath(name) || name.includes("/") || (subfolder && !safeRelPath(subfolder))) throw new GatewayError("GW_ERR_BAD_PATH", `${subfolder}/${name}`);
    const data = Buffer.from(await file.arrayBuffer());
    const dot = name.lastIndexOf(".");
    const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
    let final = name;
    if (!overwrite) {
      // ComfyUI: identical bytes reuse the name, different bytes get "name (1).ext", "name (2).ext" …
      for (let i = 1; ; i++) {
        const existing = await ctx.files.input.get(subfolder ? `${subfolder}/${final}` : final);
        if (!existing || existing.equals(data)) break;
        final = `${stem} (${i})${ext}`;
      }
    }
    const key = subfolder ? `${subfolder}/${final}` : final;
    const existing = overwrite ? undefined : await ctx.files.input.get(key);
    if (!existing) await ctx.files.input.put(key, data);
    return { name: final, subfolder, type };
  };
  both(app, "POST", "/upload/image", upload);
  // The mask is stored as uploaded (ComfyUI composites it onto original_ref's alpha; see README).
  both(app, "POST", "/upload/mask", upload);
}
