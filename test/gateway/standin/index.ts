// A ComfyUI 0.3.64 stand-in for tests: the real HTTP + WebSocket protocol (routes, validation, queue,
// events, history, files) with fake nodes that take `stepMs` per sampler step and write tiny PNGs.
// See README.md next to this file for what is faithful and what is simplified.
import { createHash } from "crypto";
import * as fs from "fs";
import { AddressInfo } from "net";
import * as os from "os";
import * as path from "path";
import { Engine, Fault } from "./engine";
import { NodeContext } from "./nodes";
import { StaticTrees, TEMPLATES_FIXTURE } from "./frontend";
import { guessType, StandInServer } from "./server";

export type { Fault } from "./engine";
export { FRONTEND_FIXTURE, TEMPLATES_FIXTURE } from "./frontend";

export interface StandInOptions {
  port?: number;
  host?: string;
  stepMs?: number;
  /** In-process only: awaited before each sampler step, so a test can hold a prompt until its client is ready. */
  beforeStep?: (promptId: string, step: number) => Promise<void>;
  models?: Record<string, string[]>;
  /**
   * A models folder used as it is (not emptied, not filled from `models`): e.g. a model agent's, which fills it
   * while the stand-in runs. @defaultValue `<dataDir>/models`, holding `models` as empty files
   */
  modelsDir?: string;
  /**
   * Charge a model load: when a prompt's checkpoint / diffusion model differs from the one loaded last, the
   * stand-in reads the file from its models folder (absent → the loader fails, as ComfyUI's would) and
   * sleeps this many ms per byte. @defaultValue 0 (loads are still counted)
   */
  loadMsPerByte?: number;
  dataDir?: string;
  readyAfterMs?: number;
  neverReady?: boolean;
  fault?: Fault;
  maxUploadMb?: number;
  /** --preview-method: "none" (default, like ComfyUI) sends no binary preview frames; any other value sends one per sampler step */
  previewMethod?: "none" | "auto" | "latent2rgb" | "taesd";
  /** how a "crash" fault ends things: drop every socket and stop listening (default), or SIGKILL this process (the CLI) */
  crashBy?: "sockets" | "sigkill";
  /**
   * The web root (`--front-end-root`): a built frontend served at `/` like ComfyUI does, e.g. FRONTEND_FIXTURE.
   * Off by default: a gateway reads every frontend file of a pod it meets, which only browser tests need.
   */
  frontendRoot?: string;
  /** The comfyui-workflow-templates tree served at /templates/ (null: none). @defaultValue TEMPLATES_FIXTURE */
  templatesRoot?: string | null;
}

export interface StandIn {
  url: string;
  port: number;
  dataDir: string;
  setFault(f: Fault | undefined): void;
  /** A prompt stuck on a `hang` fault ends as interrupted (the GPU came back); the stand-in is idle again. */
  recover(): void;
  /** prompt ids executed (started) so far, in order — lets tests check "never run twice" and spreading */
  executed(): string[];
  /** Model loads so far (a checkpoint or diffusion model different from the one loaded last), in order. */
  loads(): { folder: string; name: string; bytes: number }[];
  /**
   * In-process only: what each node of a recent prompt (the last 32 run) output, by node id — tokens such as
   * LoadImage's FakeMask, which carries the mask values read from the file's alpha.
   */
  nodeOutputs(promptId: string): Record<string, unknown[]> | undefined;
  close(): Promise<void>;
}

/** Models covering every fixture workflow in /work/shared/fixtures/workflows (plus SD 1.5 for §8's graph). */
export const DEFAULT_MODELS: Record<string, string[]> = {
  checkpoints: [
    "sd_xl_base_1.0.safetensors",
    "sd_xl_refiner_1.0.safetensors",
    "sd3_medium.safetensors",
    "flux1-dev-fp8.safetensors",
    "flux1-schnell-fp8.safetensors",
    "v1-5-pruned-emaonly.safetensors",
  ],
  diffusion_models: ["flux1-dev.safetensors", "flux1-schnell.safetensors"],
  text_encoders: ["clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors"],
  vae: ["ae.safetensors"],
};

// folder_paths.py@v0.3.64: folder keys in registration order, their directories and extensions.
const PT = [".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"];
const FOLDERS: [string, string[], string[] | "folder" | "any"][] = [
  ["checkpoints", ["checkpoints"], PT],
  ["configs", ["configs"], [".yaml"]],
  ["loras", ["loras"], PT],
  ["vae", ["vae"], PT],
  ["text_encoders", ["text_encoders", "clip"], PT],
  ["diffusion_models", ["unet", "diffusion_models"], PT],
  ["clip_vision", ["clip_vision"], PT],
  ["style_models", ["style_models"], PT],
  ["embeddings", ["embeddings"], PT],
  ["diffusers", ["diffusers"], "folder"],
  ["vae_approx", ["vae_approx"], PT],
  ["controlnet", ["controlnet", "t2i_adapter"], PT],
  ["gligen", ["gligen"], PT],
  ["upscale_models", ["upscale_models"], PT],
  ["custom_nodes", ["../custom_nodes"], []],
  ["hypernetworks", ["hypernetworks"], PT],
  ["photomaker", ["photomaker"], PT],
  ["classifiers", ["classifiers"], "any"],
  ["model_patches", ["model_patches"], PT],
  ["audio_encoders", ["audio_encoders"], PT],
];

function listModels(modelsDir: string, folder: string): string[] {
  const f = FOLDERS.find(([k]) => k === folder);
  if (!f) return [];
  const [, dirs, exts] = f;
  const out = new Set<string>();
  for (const d of dirs) {
    const root = path.join(modelsDir, d);
    const walk = (dir: string) => {
      if (!fs.existsSync(dir)) return;
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        if (e.name === ".git") continue;
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else {
          const rel = path.relative(root, p).split(path.sep).join("/");
          const ext = path.extname(e.name).toLowerCase();
          if (exts === "any" || (Array.isArray(exts) && exts.includes(ext))) out.add(rel);
        }
      }
    };
    walk(root);
  }
  return [...out].sort();
}

export async function startStandIn(opts: StandInOptions = {}): Promise<StandIn> {
  const ownDir = opts.dataDir === undefined;
  const dataDir = path.resolve(opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "comfy-standin-")));
  const dirs = {
    output: path.join(dataDir, "output"),
    input: path.join(dataDir, "input"),
    temp: path.join(dataDir, "temp"),
    user: path.join(dataDir, "user"),
    models: opts.modelsDir === undefined ? path.join(dataDir, "models") : path.resolve(opts.modelsDir),
  };
  // ComfyUI wipes its temp folder at start-up; models are exactly what this run was given.
  fs.rmSync(dirs.temp, { recursive: true, force: true });
  if (opts.modelsDir === undefined) fs.rmSync(dirs.models, { recursive: true, force: true });
  for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true });
  const models = opts.modelsDir === undefined ? (opts.models ?? DEFAULT_MODELS) : {};
  for (const [folder, files] of Object.entries(models)) {
    const f = FOLDERS.find(([k]) => k === folder);
    if (!f) throw new Error(`startStandIn: unknown model folder "${folder}" (known: ${FOLDERS.map(([k]) => k).join(", ")})`);
    for (const file of files) {
      const p = path.join(dirs.models, f[1][0], file);
      if (!path.resolve(p).startsWith(path.resolve(dirs.models) + path.sep)) throw new Error(`startStandIn: model file "${file}" escapes the models folder`);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, "");
    }
  }

  let loaded: string | undefined;
  const loads: { folder: string; name: string; bytes: number }[] = [];
  const resolveAnnotated = (name: string): string => {
    if (name.endsWith("[output]")) return path.join(dirs.output, name.slice(0, -9));
    if (name.endsWith("[input]")) return path.join(dirs.input, name.slice(0, -8));
    if (name.endsWith("[temp]")) return path.join(dirs.temp, name.slice(0, -7));
    return path.join(dirs.input, name);
  };
  const ctx: NodeContext = {
    models: (folder) => listModels(dirs.models, folder),
    inputImages: () =>
      fs
        .readdirSync(dirs.input, { withFileTypes: true })
        .filter((e) => e.isFile() && (guessType(e.name) ?? "").startsWith("image/"))
        .map((e) => e.name)
        .sort(),
    inputFiles: () =>
      fs
        .readdirSync(dirs.input, { withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => e.name)
        .sort(),
    inputFileExists: (name) => fs.existsSync(resolveAnnotated(name)),
    inputFileHash: (name) => createHash("sha256").update(fs.readFileSync(resolveAnnotated(name))).digest("hex"),
    loadModel: async (folder, name) => {
      if (loaded === `${folder}/${name}`) return;
      const dirsOf = FOLDERS.find(([k]) => k === folder)?.[1] ?? [folder];
      const file = dirsOf.map((d) => path.join(dirs.models, d, name)).find((p) => fs.existsSync(p));
      // comfy.sd.load_checkpoint_guess_config reads the whole file; a missing one is an error, as there.
      if (!file) throw new Error(`stand-in: model ${folder}/${name} is not in ${dirs.models}`);
      const bytes = fs.readFileSync(file).length;
      loaded = `${folder}/${name}`;
      loads.push({ folder, name, bytes });
      const ms = bytes * (opts.loadMsPerByte ?? 0);
      if (ms > 0) await new Promise((r) => setTimeout(r, ms));
    },
  };

  let engine: Engine | undefined = undefined;
  const server = new StandInServer({
    dataDir,
    maxUploadMb: opts.maxUploadMb ?? 100,
    readyAt: opts.neverReady ? Infinity : Date.now() + (opts.readyAfterMs ?? 0),
    ctx,
    dirs,
    modelFolders: () => FOLDERS.map(([k]) => k),
    statics: new StaticTrees(opts.frontendRoot === undefined ? undefined : path.resolve(opts.frontendRoot), opts.templatesRoot === null ? undefined : path.resolve(opts.templatesRoot ?? TEMPLATES_FIXTURE)),
    engine: () => engine as Engine,
  });
  engine = new Engine({ stepMs: opts.stepMs ?? 10, beforeStep: opts.beforeStep, previewMethod: opts.previewMethod ?? "none", dirs, ctx, hub: server.hub, onCrash: () => (opts.crashBy === "sigkill" ? process.kill(process.pid, "SIGKILL") : server.destroyAll()) });
  engine.fault = opts.fault;

  await new Promise<void>((resolve, reject) => {
    server.http.once("error", reject);
    server.http.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  engine.start();
  const port = (server.http.address() as AddressInfo).port;
  const host = opts.host ?? "127.0.0.1";
  let closing: Promise<void> | undefined;
  const eng = engine;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    dataDir,
    setFault: (f) => (eng.fault = f),
    recover: () => eng.recover(),
    executed: () => [...eng.started],
    loads: () => [...loads],
    nodeOutputs: (promptId) => eng.nodeOutputs.get(promptId),
    close: () =>
      (closing ??= (async () => {
        await eng.stop();
        await server.close();
        fs.rmSync(dirs.temp, { recursive: true, force: true });
        if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true });
      })()),
  };
}
