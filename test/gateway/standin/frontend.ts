// The static trees a ComfyUI 0.3.64 process serves next to its API (server.py `add_routes`, a125cd84):
// `web.static('/templates', <comfyui-workflow-templates>/templates)` and, last, `web.static('/', web_root)`,
// plus `GET /` → index.html with no-cache headers, and the `cache_control` middleware
// (middleware/cache_middleware.py) on every answer.
import * as fs from "fs";
import * as path from "path";

/** The repository root (this file is test/gateway/standin/frontend.ts). */
const REPO_ROOT = path.resolve(__dirname, "..", "..", "..");

/**
 * The built frontend ComfyUI 0.3.64 pins (requirements.txt: comfyui-frontend-package==1.27.10), kept beside the
 * repository in shared/ (see its README) and used from there, never copied into the project.
 */
export const FRONTEND_FIXTURE = path.resolve(REPO_ROOT, "..", "shared", "fixtures", "comfyui-frontend", "1.27.10");

/** The workflow-templates tree the stand-in serves under /templates (test/upstream/comfyui-workflow-templates/README.md). */
export const TEMPLATES_FIXTURE = path.resolve(REPO_ROOT, "test", "upstream", "comfyui-workflow-templates", "templates");

// What Python's mimetypes answers inside ComfyUI's image (Ubuntu 24.04: mimetypes.init() reads
// /etc/mime.types from media-types), with server.py's own override for .js:
// mimetypes.add_type('application/javascript; charset=utf-8', '.js'). `.mjs` must be JavaScript too, or a
// browser refuses the frontend's primevue modules ("Failed to load module script").
const STATIC_TYPES: Record<string, string> = {
  ".html": "text/html",
  ".js": "application/javascript; charset=utf-8",
  ".mjs": "text/javascript",
  ".css": "text/css",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/vnd.microsoft.icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".eot": "application/vnd.ms-fontobject",
  ".txt": "text/plain",
  ".mp4": "video/mp4",
  ".webm": "video/webm",
  ".mp3": "audio/mpeg",
  ".wasm": "application/wasm",
};

export function staticType(file: string): string {
  return STATIC_TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream";
}

export interface StaticAnswer {
  status: number;
  headers: Record<string, string>;
  body: Buffer | string;
}

/**
 * aiohttp's StaticResource for one mount: a file under `root` → 200 with its bytes; a folder → 403 (no
 * show_index); anything missing or outside the root → 404.
 */
function fromRoot(root: string, rel: string): StaticAnswer | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(rel);
  } catch {
    return undefined;
  }
  const file = path.resolve(root, "." + path.sep + decoded);
  if (file !== root && !file.startsWith(root + path.sep)) return undefined;
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return undefined;
  }
  if (st.isDirectory()) return { status: 403, headers: { "Content-Type": "text/plain; charset=utf-8" }, body: "403: Forbidden" };
  return {
    status: 200,
    headers: { "Content-Type": staticType(file), "Last-Modified": st.mtime.toUTCString(), "Accept-Ranges": "bytes" },
    body: fs.readFileSync(file),
  };
}

/** The static trees of one stand-in: `/templates/…` (if given) first, then the web root (if given). */
export class StaticTrees {
  constructor(
    private readonly webRoot: string | undefined,
    private readonly templatesRoot: string | undefined,
  ) {}

  get hasFrontend(): boolean {
    return this.webRoot !== undefined;
  }

  /** server.py get_root: index.html, never cached. */
  index(): StaticAnswer | undefined {
    if (!this.webRoot) return undefined;
    const a = fromRoot(this.webRoot, "index.html");
    if (!a || a.status !== 200) return undefined;
    return { ...a, headers: { ...a.headers, "Cache-Control": "no-cache", Pragma: "no-cache", Expires: "0" } };
  }

  /** A GET that no API route took; undefined = aiohttp's 404. */
  serve(urlPath: string): StaticAnswer | undefined {
    if (this.templatesRoot && urlPath.startsWith("/templates/")) {
      const a = fromRoot(this.templatesRoot, urlPath.slice("/templates/".length));
      if (a) return a;
      // A missing file under a prefix route is a 404 from that route; aiohttp does not fall through to '/'.
      return undefined;
    }
    if (this.webRoot && urlPath.startsWith("/")) return fromRoot(this.webRoot, urlPath.slice(1));
    return undefined;
  }
}

// middleware/cache_middleware.py cache_control (a125cd84): .js/.css and index*.json → no-cache; image
// extensions → 1 day on success and permanent redirects, 1 hour on 404; everything else untouched.
const IMG_EXTENSIONS = [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"];
export function cacheControl(urlPath: string, status: number, headers: Record<string, string>): Record<string, string> {
  if (Object.keys(headers).some((h) => h.toLowerCase() === "cache-control")) return headers;
  const filename = urlPath.slice(urlPath.lastIndexOf("/") + 1);
  const entryPoint = filename.startsWith("index") && filename.endsWith(".json");
  if (urlPath.endsWith(".js") || urlPath.endsWith(".css") || entryPoint) return { ...headers, "Cache-Control": "no-cache" };
  if (!IMG_EXTENSIONS.some((e) => urlPath.toLowerCase().endsWith(e))) return headers;
  if (status === 404) return { ...headers, "Cache-Control": "public, max-age=3600" };
  if ([200, 201, 202, 203, 204, 205, 206, 301, 308].includes(status)) return { ...headers, "Cache-Control": "public, max-age=86400" };
  if ([302, 303, 307].includes(status)) return { ...headers, "Cache-Control": "no-cache" };
  return headers;
}
