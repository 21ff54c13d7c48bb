/**
 * The model library: an index of the models bucket, which is the studio's whole library (issue 19). Every
 * gateway replica keeps one, so every replica serves the loaders' model lists and validates prompts against
 * the bucket rather than against whatever one pod's node happens to hold.
 *
 * Kept current by listing (ListObjectsV2, paginated) at start and every `GATEWAY_MODELS_LIST_SECONDS`, not from
 * the S3 events the node sync path consumes: that SQS queue has one consumer (the sync Lambda), so feeding the
 * gateway from it needs a second subscription (SNS or EventBridge fan-out) and still a listing at start and
 * after any lost message; a listing of a library of a few hundred keys is one request, a few cents a month at
 * a 15 s interval, and is always right after it returns. docs/models.md "The library is the bucket".
 */
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import type { Logger } from "pino";
import { MODEL_FOLDERS } from "../../../contracts/modelsAgent";

export interface LibraryFile {
  /** The bucket key, which is also the path under the node's models folder (`checkpoints/x.safetensors`). */
  key: string;
  bytes: number;
  etag?: string;
  /** Epoch ms. */
  modified: number;
}

export interface Lister {
  list(): Promise<LibraryFile[]>;
}

/** The models bucket's client: AWS's S3, or another S3 API (s3rver, MinIO: path-style) named by GATEWAY_MODELS_ENDPOINT. */
export function modelsS3Client(c: { region?: string; modelsEndpoint?: string }): S3Client {
  return new S3Client({ region: c.region ?? process.env.AWS_REGION ?? "us-east-1", ...(c.modelsEndpoint ? { endpoint: c.modelsEndpoint, forcePathStyle: true } : {}) });
}

/** Every key under a model folder, paginated (1000 keys a page). */
export function s3Lister(s3: S3Client, bucket: string): Lister {
  return {
    async list() {
      const out: LibraryFile[] = [];
      let token: string | undefined;
      do {
        const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
        for (const o of page.Contents ?? []) {
          if (!o.Key || o.Key.endsWith("/")) continue;
          out.push({ key: o.Key, bytes: o.Size ?? 0, etag: o.ETag?.replace(/"/g, ""), modified: o.LastModified?.getTime() ?? 0 });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return out;
    },
  };
}

/**
 * ComfyUI's folder keys and the directories under models/ each one reads, in search order
 * (folder_paths.py @ a125cd84, v0.3.64: `text_encoders` also reads the legacy `clip/`, `diffusion_models` reads
 * `unet/` first, `controlnet` also `t2i_adapter/`). A key listed by `/models` that is not here reads its own name.
 */
export const FOLDER_DIRS: Readonly<Record<string, readonly string[]>> = {
  text_encoders: ["text_encoders", "clip"],
  diffusion_models: ["unet", "diffusion_models"],
  controlnet: ["controlnet", "t2i_adapter"],
};

/** folder_paths.py supported_pt_extensions @ a125cd84: what ComfyUI lists in a model folder. */
export const PT_EXTENSIONS = [".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"];

/** Whether ComfyUI would list `name` in `folder` (folder_paths.filter_files_extensions): configs are .yaml, classifiers anything. */
export function listable(folder: string, name: string): boolean {
  if (folder === "classifiers") return true;
  if (folder === "diffusers" || folder === "custom_nodes") return false;
  const dot = name.lastIndexOf(".");
  const ext = dot < 0 ? "" : name.slice(dot).toLowerCase();
  return folder === "configs" ? ext === ".yaml" : PT_EXTENSIONS.includes(ext);
}

/** Looks like a model file (any PT extension): the part of a combo's options the library replaces. */
export function modelLike(name: string): boolean {
  const dot = name.lastIndexOf(".");
  return dot >= 0 && PT_EXTENSIONS.includes(name.slice(dot).toLowerCase());
}

export function dirsOf(folder: string): readonly string[] {
  return FOLDER_DIRS[folder] ?? [folder];
}

/** The ComfyUI folder key a bucket key's first directory belongs to (`clip/x` → text_encoders). */
export function folderOfDir(dir: string): string {
  for (const [folder, dirs] of Object.entries(FOLDER_DIRS)) if (dirs.includes(dir)) return folder;
  return dir;
}

export class ModelLibrary {
  private files = new Map<string, LibraryFile>();
  /** folder key → name → file (first directory in search order wins, as ComfyUI's get_full_path). */
  private byFolder = new Map<string, Map<string, LibraryFile>>();
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  /** Bumped whenever the listing changed (callers re-derive what they built from it). */
  version = 0;
  /** When the last listing completed (0: never). */
  listedAt = 0;
  /** Told after a listing that changed something. */
  onChange: () => void = () => {};

  constructor(private readonly lister: Lister, private readonly log: Logger, private readonly intervalMs = 15_000) {}

  /** Lists once (a failure is logged; the gateway serves what the pods' caches say meanwhile), then keeps listing. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  get ready(): boolean {
    return this.listedAt > 0;
  }

  /** One listing at a time; a caller arriving during one waits for it. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const listed = await this.lister.list();
        const next = new Map<string, LibraryFile>();
        for (const f of listed) if (MODEL_FOLDERS.includes(f.key.split("/")[0]) && f.key.includes("/")) next.set(f.key, f);
        const changed = next.size !== this.files.size || [...next].some(([k, f]) => this.files.get(k)?.etag !== f.etag || this.files.get(k)?.bytes !== f.bytes);
        this.listedAt = Date.now();
        if (!changed) return;
        this.files = next;
        this.index();
        this.version++;
        this.log.info({ files: next.size, bytes: [...next.values()].reduce((s, f) => s + f.bytes, 0) }, "model library listed");
        this.onChange();
      } catch (err: unknown) {
        this.log.warn({ err: (err as Error).message }, "listing the models bucket failed; keeping the last listing");
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  private index(): void {
    const by = new Map<string, Map<string, LibraryFile>>();
    // Sorted by key, then each folder's directories in search order: the first directory holding a name wins.
    const sorted = [...this.files.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const folders = new Set(sorted.map((f) => folderOfDir(f.key.split("/")[0])));
    for (const folder of folders) {
      const m = new Map<string, LibraryFile>();
      for (const dir of dirsOf(folder)) {
        for (const f of sorted) {
          if (!f.key.startsWith(`${dir}/`)) continue;
          const name = f.key.slice(dir.length + 1);
          if (listable(folder, name) && !m.has(name)) m.set(name, f);
        }
      }
      by.set(folder, m);
    }
    this.byFolder = by;
  }

  get size(): number {
    return this.files.size;
  }

  get(key: string): LibraryFile | undefined {
    return this.files.get(key);
  }

  /** The names ComfyUI would list for `folder` if a node held the whole library, sorted as folder_paths does. */
  names(folder: string): string[] {
    return [...(this.byFolder.get(folder)?.keys() ?? [])].sort();
  }

  /** The file a loader's value names in `folder`, or undefined when the library has none. */
  resolve(folder: string, name: string): LibraryFile | undefined {
    return this.byFolder.get(folder)?.get(name);
  }

  folders(): string[] {
    return [...this.byFolder.keys()];
  }
}
