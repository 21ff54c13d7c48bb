/**
 * Which node inputs name model files, the library merged into `/object_info`, and the files a prompt needs.
 *
 * `/object_info` does not say which folder a combo's options come from. Two sources, in this order:
 * 1. LOADER_INPUTS, the loaders of ComfyUI itself (nodes.py and comfy_extras/*.py @ a125cd84, v0.3.64), each
 *    input with the `folder_paths.get_filename_list(<folder>)` its INPUT_TYPES calls;
 * 2. learned from a pod (any custom loader): a combo whose model-like options (PT extensions) are exactly the
 *    files that pod's `/models/<folder>` lists for one folder, read in the same discovery refresh.
 */
import type { ApiPrompt, NodeInfo, ObjectInfo } from "../protocol/validate";
import { modelLike, type LibraryFile, type ModelLibrary } from "./library";

/** class → input → ComfyUI folder key. */
export type ModelInputs = Record<string, Record<string, string>>;

const clips = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`clip_name${i + 1}`, "text_encoders"]));

/** ComfyUI's own loaders at a125cd84 (nodes.py unless noted). */
export const LOADER_INPUTS: ModelInputs = {
  CheckpointLoaderSimple: { ckpt_name: "checkpoints" },
  CheckpointLoader: { config_name: "configs", ckpt_name: "checkpoints" },
  unCLIPCheckpointLoader: { ckpt_name: "checkpoints" },
  ImageOnlyCheckpointLoader: { ckpt_name: "checkpoints" }, // comfy_extras/nodes_video_model.py
  LoraLoader: { lora_name: "loras" },
  LoraLoaderModelOnly: { lora_name: "loras" },
  VAELoader: { vae_name: "vae" }, // plus the taesd approximations and "pixel_space", kept as they are
  ControlNetLoader: { control_net_name: "controlnet" },
  DiffControlNetLoader: { control_net_name: "controlnet" },
  UNETLoader: { unet_name: "diffusion_models" },
  CLIPLoader: { clip_name: "text_encoders" },
  DualCLIPLoader: clips(2),
  TripleCLIPLoader: clips(3), // comfy_extras/nodes_sd3.py
  QuadrupleCLIPLoader: clips(4), // comfy_extras/nodes_hidream.py
  CLIPVisionLoader: { clip_name: "clip_vision" },
  StyleModelLoader: { style_model_name: "style_models" },
  GLIGENLoader: { gligen_name: "gligen" },
  UpscaleModelLoader: { model_name: "upscale_models" }, // comfy_extras/nodes_upscale_model.py
  HypernetworkLoader: { hypernetwork_name: "hypernetworks" }, // comfy_extras/nodes_hypernetwork.py
  PhotoMakerLoader: { photomaker_model_name: "photomaker" }, // comfy_extras/nodes_photomaker.py
  ModelPatchLoader: { name: "model_patches" }, // comfy_extras/nodes_model_patch.py
  AudioEncoderLoader: { audio_encoder_name: "audio_encoders" }, // comfy_extras/nodes_audio_encoder.py
};

/** Folders whose file is "the model" of a prompt: what ComfyUI loads into VRAM and a model switch reloads. */
export const MAIN_MODEL_FOLDERS = new Set(["checkpoints", "diffusion_models"]);

type Spec = unknown[];

/** A combo's options: the legacy `[[...], opts]` or the V3 `["COMBO", {options: [...]}]` form. */
function comboOptions(spec: Spec | undefined): string[] | undefined {
  if (!Array.isArray(spec)) return undefined;
  if (Array.isArray(spec[0])) return spec[0].filter((o): o is string => typeof o === "string");
  if (spec[0] === "COMBO" && spec[1] && typeof spec[1] === "object") {
    const o = (spec[1] as { options?: unknown }).options;
    return Array.isArray(o) ? o.filter((x): x is string => typeof x === "string") : undefined;
  }
  return undefined;
}

function withOptions(spec: Spec, options: string[]): Spec {
  if (Array.isArray(spec[0])) return [options, ...spec.slice(1)];
  return [spec[0], { ...(spec[1] as object), options }, ...spec.slice(2)];
}

function inputsOf(n: NodeInfo): [string, Spec][] {
  return [...Object.entries(n.input?.required ?? {}), ...Object.entries(n.input?.optional ?? {})];
}

/**
 * The model inputs of one pod's node list: the table's entries that exist there, plus any combo whose
 * model-like options equal one folder's non-empty listing on that pod (unambiguously).
 */
export function learnModelInputs(info: ObjectInfo, folders: Record<string, string[]>): ModelInputs {
  const out: ModelInputs = {};
  const listings = Object.entries(folders)
    .map(([f, files]) => [f, files.filter(modelLike).sort()] as const)
    .filter(([, files]) => files.length > 0);
  for (const [cls, node] of Object.entries(info)) {
    for (const [name, spec] of inputsOf(node)) {
      const opts = comboOptions(spec);
      if (!opts) continue;
      const known = LOADER_INPUTS[cls]?.[name];
      if (known) {
        (out[cls] ??= {})[name] = known;
        continue;
      }
      const models = opts.filter(modelLike).sort();
      if (models.length === 0) continue;
      const match = listings.filter(([, files]) => files.length === models.length && files.every((f, i) => f === models[i]));
      if (match.length === 1) (out[cls] ??= {})[name] = match[0][0];
    }
  }
  return out;
}

/**
 * The node list with every model input's options replaced by the library's files of its folder (the options
 * that are not model files — VAELoader's approximations, "pixel_space" — kept after them). A folder the
 * library has nothing in keeps the pod's list.
 */
export function withLibrary(info: ObjectInfo, inputs: ModelInputs, lib: ModelLibrary): ObjectInfo {
  if (!lib.ready) return info;
  const out: ObjectInfo = { ...info };
  for (const [cls, map] of Object.entries(inputs)) {
    const node = info[cls];
    if (!node?.input) continue;
    const input = { ...node.input };
    for (const part of ["required", "optional"] as const) {
      const specs = input[part];
      if (!specs) continue;
      const next: Record<string, unknown[]> = { ...specs };
      for (const [name, folder] of Object.entries(map)) {
        const spec = specs[name];
        const opts = comboOptions(spec);
        if (!spec || !opts) continue;
        const files = lib.names(folder);
        next[name] = withOptions(spec, [...files, ...opts.filter((o) => !modelLike(o) && !files.includes(o))]);
      }
      input[part] = next;
    }
    out[cls] = { ...node, input };
  }
  return out;
}

export interface ModelNeeds {
  /** Library files the prompt's loaders name, each once. */
  files: LibraryFile[];
  /** The checkpoint or diffusion model (the first such loader's), by bucket key. */
  main?: string;
  /** The node id of a loader per file key (where a fetch's progress is shown). */
  nodeOf: Record<string, string>;
}

/** From a prompt's loader inputs: the model files it needs (values the library does not hold are left to the pod's validation). */
export function modelNeeds(prompt: ApiPrompt | Record<string, unknown>, inputs: ModelInputs, lib: ModelLibrary): ModelNeeds {
  const files = new Map<string, LibraryFile>();
  const nodeOf: Record<string, string> = {};
  let main: string | undefined;
  const ids = Object.keys(prompt).sort((a, b) => Number(a) - Number(b) || (a < b ? -1 : a > b ? 1 : 0));
  for (const id of ids) {
    const node = (prompt as ApiPrompt)[id];
    const cls = typeof node?.class_type === "string" ? node.class_type : undefined;
    const map = cls ? inputs[cls] : undefined;
    if (!map || !node.inputs) continue;
    for (const [name, folder] of Object.entries(map)) {
      const v = node.inputs[name];
      if (typeof v !== "string") continue;
      const f = lib.resolve(folder, v);
      if (!f) continue;
      files.set(f.key, f);
      nodeOf[f.key] ??= id;
      if (!main && MAIN_MODEL_FOLDERS.has(folder)) main = f.key;
    }
  }
  return { files: [...files.values()], main, nodeOf };
}
