// The node classes the stand-in knows: the ones the fixture workflows (/work/shared/fixtures/workflows)
// and the npm clients use, with ComfyUI 0.3.64's INPUT_TYPES / RETURN_TYPES / OUTPUT_NODE / CATEGORY
// (Comfy-Org/ComfyUI@a125cd84 = v0.3.64: nodes.py, comfy_extras/nodes_custom_sampler.py,
// nodes_model_advanced.py, nodes_sd3.py, nodes_flux.py; sampler/scheduler names from comfy/samplers.py).
// Execution is fake: loaders return tokens, samplers only count steps, images are tiny PNGs.
import { createHash } from "crypto";

export type InputSpec = [string | unknown[]] | [string | unknown[], Record<string, unknown>];
export interface InputTypes {
  required?: Record<string, InputSpec>;
  optional?: Record<string, InputSpec>;
  hidden?: Record<string, string | [string]>;
}

/** What node definitions may read from the stand-in (model folders, input files). */
export interface NodeContext {
  models(folder: string): string[];
  inputImages(): string[];
  /** every file of the input folder, images or not (LoadImageMask lists them all) */
  inputFiles(): string[];
  inputFileExists(annotatedName: string): boolean;
  inputFileHash(annotatedName: string): string;
  /** A checkpoint / diffusion model loader ran (the stand-in counts loads and may charge time for them). */
  loadModel?(folder: string, name: string): Promise<void>;
}

/** What a running node may do: report sampler steps (may throw an interrupt), save images. */
export interface RunContext extends NodeContext {
  nodeId: string;
  /** one sampler step done; `latent` feeds the preview image when a preview method is on */
  step(value: number, max: number, latent?: FakeLatent): Promise<void>;
  saveImages(images: FakeImage, prefix: string, kind: "output" | "temp", prompt: unknown, extraPngInfo: unknown): { filename: string; subfolder: string; type: string }[];
  loadImage(annotatedName: string): FakeImage;
  /** nodes.py LoadImage's MASK: 1 - alpha/255 of the file (float32), or zeros((64, 64)) when it has no alpha. */
  loadAlphaMask(annotatedName: string): FakeMask;
}

export interface RunResult {
  outputs: unknown[];
  ui?: Record<string, unknown[]>;
}

export interface NodeDef {
  name: string;
  inputTypes(ctx: NodeContext): InputTypes;
  output: string[];
  outputName?: string[];
  outputTooltips?: (string | null)[];
  outputNode?: boolean;
  category: string;
  description?: string;
  displayName?: string;
  pythonModule: string;
  /** V3 (comfy_api io.ComfyNode) classes: /object_info comes from GET_NODE_INFO_V1, and 0.3.64 does not check their COMBO values. */
  v3?: boolean;
  /** IS_CHANGED: part of the cache signature. */
  isChanged?(ctx: NodeContext, inputs: Record<string, unknown>): unknown;
  /** VALIDATE_INPUTS(args…): replaces the built-in checks for `args`; returns true or a reason. */
  validateInputs?: { args: string[]; fn(ctx: NodeContext, inputs: Record<string, unknown>): true | string };
  run(ctx: RunContext, inputs: Record<string, unknown>): Promise<RunResult>;
}

// Fake values flowing along links. Their str() appears in execution_error.current_inputs.
export class Token {
  constructor(readonly kind: string, readonly tag: string) {}
  toString(): string {
    return `<${this.kind} ${this.tag.slice(0, 8)}>`;
  }
}
export class FakeLatent extends Token {
  constructor(readonly width: number, readonly height: number, readonly batch: number, tag: string) {
    super("LATENT", tag);
  }
}
export class FakeImage extends Token {
  constructor(readonly width: number, readonly height: number, readonly batch: number, tag: string) {
    super("IMAGE", tag);
  }
}
/** A MASK that carries its values (row-major, `height` × `width`), so a test can read what a loader produced. */
export class FakeMask extends Token {
  constructor(readonly width: number, readonly height: number, readonly values: Float32Array, tag: string) {
    super("MASK", tag);
  }
}
export class FakeSigmas extends Token {
  constructor(readonly steps: number, tag: string) {
    super("SIGMAS", tag);
  }
}

function tagOf(...parts: unknown[]): string {
  return createHash("sha256").update(JSON.stringify(parts, (_k, v) => (v instanceof Token ? v.tag : v))).digest("hex");
}

const MAX_RESOLUTION = 16384;
const U64_MAX = 0xffffffffffffffff; // JS double; /object_info prints it as 18446744073709551615 (see server.ts)

// comfy/samplers.py@v0.3.64: KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"], SCHEDULER_HANDLERS keys.
export const SAMPLER_NAMES = [
  "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral",
  "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu",
  "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
  "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
  "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
  "ddim", "uni_pc", "uni_pc_bh2",
];
export const SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal"];

const tok = (kind: string, ...parts: unknown[]) => new Token(kind, tagOf(kind, ...parts));

async function sample(ctx: RunContext, steps: number, latent: FakeLatent, ...parts: unknown[]): Promise<FakeLatent> {
  // The progress hook reports update_absolute(step + 1, total) once per sampled step (latent_preview.prepare_callback).
  for (let i = 0; i < steps; i++) await ctx.step(i + 1, steps, latent);
  return new FakeLatent(latent.width, latent.height, latent.batch, tagOf("sample", latent, steps, ...parts));
}

/** VAELoader.vae_list() without approximate (TAESD) decoders present: the vae folder plus "pixel_space". */
function vaeList(ctx: NodeContext): string[] {
  return [...ctx.models("vae"), "pixel_space"];
}

const defs: NodeDef[] = [
  {
    name: "CheckpointLoaderSimple",
    displayName: "Load Checkpoint",
    inputTypes: (ctx) => ({ required: { ckpt_name: [ctx.models("checkpoints"), { tooltip: "The name of the checkpoint (model) to load." }] } }),
    output: ["MODEL", "CLIP", "VAE"],
    outputTooltips: [
      "The model used for denoising latents.",
      "The CLIP model used for encoding text prompts.",
      "The VAE model used for encoding and decoding images to and from latent space.",
    ],
    category: "loaders",
    description: "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
    pythonModule: "nodes",
    run: async (ctx, i) => {
      await ctx.loadModel?.("checkpoints", String(i.ckpt_name));
      return { outputs: [tok("MODEL", i.ckpt_name), tok("CLIP", i.ckpt_name), tok("VAE", i.ckpt_name)] };
    },
  },
  {
    name: "CLIPTextEncode",
    displayName: "CLIP Text Encode (Prompt)",
    inputTypes: () => ({
      required: {
        text: ["STRING", { multiline: true, dynamicPrompts: true, tooltip: "The text to be encoded." }],
        clip: ["CLIP", { tooltip: "The CLIP model used for encoding the text." }],
      },
    }),
    output: ["CONDITIONING"],
    outputTooltips: ["A conditioning containing the embedded text used to guide the diffusion model."],
    category: "conditioning",
    description: "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images.",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("CONDITIONING", i.clip, i.text)] }),
  },
  {
    name: "ConditioningZeroOut",
    inputTypes: () => ({ required: { conditioning: ["CONDITIONING"] } }),
    output: ["CONDITIONING"],
    category: "advanced/conditioning",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("CONDITIONING", "zero", i.conditioning)] }),
  },
  {
    name: "EmptyLatentImage",
    displayName: "Empty Latent Image",
    inputTypes: () => ({
      required: {
        width: ["INT", { default: 512, min: 16, max: MAX_RESOLUTION, step: 8, tooltip: "The width of the latent images in pixels." }],
        height: ["INT", { default: 512, min: 16, max: MAX_RESOLUTION, step: 8, tooltip: "The height of the latent images in pixels." }],
        batch_size: ["INT", { default: 1, min: 1, max: 4096, tooltip: "The number of latent images in the batch." }],
      },
    }),
    output: ["LATENT"],
    outputTooltips: ["The empty latent image batch."],
    category: "latent",
    description: "Create a new batch of empty latent images to be denoised via sampling.",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [new FakeLatent(i.width as number, i.height as number, i.batch_size as number, tagOf("empty", i.width, i.height))] }),
  },
  {
    name: "EmptySD3LatentImage",
    v3: true,
    inputTypes: () => ({
      required: {
        width: ["INT", { default: 1024, min: 16, max: MAX_RESOLUTION, step: 16 }],
        height: ["INT", { default: 1024, min: 16, max: MAX_RESOLUTION, step: 16 }],
        batch_size: ["INT", { default: 1, min: 1, max: 4096 }],
      },
    }),
    output: ["LATENT"],
    category: "latent/sd3",
    description: "",
    pythonModule: "comfy_extras.nodes_sd3",
    run: async (_ctx, i) => ({ outputs: [new FakeLatent(i.width as number, i.height as number, i.batch_size as number, tagOf("empty16", i.width, i.height))] }),
  },
  {
    name: "KSampler",
    displayName: "KSampler",
    inputTypes: () => ({
      required: {
        model: ["MODEL", { tooltip: "The model used for denoising the input latent." }],
        seed: ["INT", { default: 0, min: 0, max: U64_MAX, control_after_generate: true, tooltip: "The random seed used for creating the noise." }],
        steps: ["INT", { default: 20, min: 1, max: 10000, tooltip: "The number of steps used in the denoising process." }],
        cfg: ["FLOAT", { default: 8.0, min: 0.0, max: 100.0, step: 0.1, round: 0.01, tooltip: "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality." }],
        sampler_name: [SAMPLER_NAMES, { tooltip: "The algorithm used when sampling, this can affect the quality, speed, and style of the generated output." }],
        scheduler: [SCHEDULER_NAMES, { tooltip: "The scheduler controls how noise is gradually removed to form the image." }],
        positive: ["CONDITIONING", { tooltip: "The conditioning describing the attributes you want to include in the image." }],
        negative: ["CONDITIONING", { tooltip: "The conditioning describing the attributes you want to exclude from the image." }],
        latent_image: ["LATENT", { tooltip: "The latent image to denoise." }],
        denoise: ["FLOAT", { default: 1.0, min: 0.0, max: 1.0, step: 0.01, tooltip: "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling." }],
      },
    }),
    output: ["LATENT"],
    outputTooltips: ["The denoised latent."],
    category: "sampling",
    description: "Uses the provided model, positive and negative conditioning to denoise the latent image.",
    pythonModule: "nodes",
    run: async (ctx, i) => {
      // comfy.samplers.KSampler: denoise <= 0 gives empty sigmas (nothing sampled); otherwise `steps` steps.
      const steps = (i.denoise as number) <= 0 ? 0 : (i.steps as number);
      return { outputs: [await sample(ctx, steps, i.latent_image as FakeLatent, i.model, i.seed, i.cfg, i.sampler_name, i.scheduler, i.positive, i.negative, i.denoise)] };
    },
  },
  {
    name: "KSamplerAdvanced",
    displayName: "KSampler (Advanced)",
    inputTypes: () => ({
      required: {
        model: ["MODEL"],
        add_noise: [["enable", "disable"]],
        noise_seed: ["INT", { default: 0, min: 0, max: U64_MAX, control_after_generate: true }],
        steps: ["INT", { default: 20, min: 1, max: 10000 }],
        cfg: ["FLOAT", { default: 8.0, min: 0.0, max: 100.0, step: 0.1, round: 0.01 }],
        sampler_name: [SAMPLER_NAMES],
        scheduler: [SCHEDULER_NAMES],
        positive: ["CONDITIONING"],
        negative: ["CONDITIONING"],
        latent_image: ["LATENT"],
        start_at_step: ["INT", { default: 0, min: 0, max: 10000 }],
        end_at_step: ["INT", { default: 10000, min: 0, max: 10000 }],
        return_with_leftover_noise: [["disable", "enable"]],
      },
    }),
    output: ["LATENT"],
    category: "sampling",
    pythonModule: "nodes",
    run: async (ctx, i) => {
      // sigmas[start_at_step : end_at_step + 1] of `steps` + 1 sigmas: that many steps are sampled.
      const steps = Math.max(0, Math.min(i.end_at_step as number, i.steps as number) - (i.start_at_step as number));
      return {
        outputs: [await sample(ctx, steps, i.latent_image as FakeLatent, i.model, i.add_noise, i.noise_seed, i.steps, i.cfg, i.sampler_name, i.scheduler, i.positive, i.negative, i.start_at_step, i.end_at_step)],
      };
    },
  },
  {
    name: "VAEDecode",
    displayName: "VAE Decode",
    inputTypes: () => ({
      required: {
        samples: ["LATENT", { tooltip: "The latent to be decoded." }],
        vae: ["VAE", { tooltip: "The VAE model used for decoding the latent." }],
      },
    }),
    output: ["IMAGE"],
    outputTooltips: ["The decoded image."],
    category: "latent",
    description: "Decodes latent images back into pixel space images.",
    pythonModule: "nodes",
    run: async (_ctx, i) => {
      const l = i.samples as FakeLatent;
      // Documented stand-in choice: an image is as many pixels as its latent has cells (width/8 x height/8), to stay tiny.
      return { outputs: [new FakeImage(Math.max(1, Math.floor(l.width / 8)), Math.max(1, Math.floor(l.height / 8)), l.batch, tagOf("decode", l, i.vae))] };
    },
  },
  {
    name: "VAEEncode",
    displayName: "VAE Encode",
    inputTypes: () => ({ required: { pixels: ["IMAGE"], vae: ["VAE"] } }),
    output: ["LATENT"],
    category: "latent",
    pythonModule: "nodes",
    run: async (_ctx, i) => {
      const im = i.pixels as FakeImage;
      return { outputs: [new FakeLatent(im.width * 8, im.height * 8, im.batch, tagOf("encode", im, i.vae))] };
    },
  },
  {
    name: "SaveImage",
    displayName: "Save Image",
    inputTypes: () => ({
      required: {
        images: ["IMAGE", { tooltip: "The images to save." }],
        filename_prefix: ["STRING", { default: "ComfyUI", tooltip: "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes." }],
      },
      hidden: { prompt: "PROMPT", extra_pnginfo: "EXTRA_PNGINFO" },
    }),
    output: [],
    outputNode: true,
    category: "image",
    description: "Saves the input images to your ComfyUI output directory.",
    pythonModule: "nodes",
    run: async (ctx, i) => ({ outputs: [], ui: { images: ctx.saveImages(i.images as FakeImage, i.filename_prefix as string, "output", i.prompt, i.extra_pnginfo) } }),
  },
  {
    name: "PreviewImage",
    displayName: "Preview Image",
    inputTypes: () => ({ required: { images: ["IMAGE"] }, hidden: { prompt: "PROMPT", extra_pnginfo: "EXTRA_PNGINFO" } }),
    output: [],
    outputNode: true,
    category: "image",
    description: "Saves the input images to your ComfyUI output directory.",
    pythonModule: "nodes",
    run: async (ctx, i) => {
      // PreviewImage: prefix "ComfyUI" + "_temp_" + 5 random letters (from "abcdefghijklmnopqrstupvxyz", sic), temp folder.
      const letters = "abcdefghijklmnopqrstupvxyz";
      let suffix = "";
      for (let k = 0; k < 5; k++) suffix += letters[Math.floor(Math.random() * letters.length)];
      return { outputs: [], ui: { images: ctx.saveImages(i.images as FakeImage, "ComfyUI_temp_" + suffix, "temp", i.prompt, i.extra_pnginfo) } };
    },
  },
  {
    name: "LoadImage",
    displayName: "Load Image",
    inputTypes: (ctx) => ({ required: { image: [ctx.inputImages(), { image_upload: true }] } }),
    output: ["IMAGE", "MASK"],
    category: "image",
    pythonModule: "nodes",
    isChanged: (ctx, i) => ctx.inputFileHash(i.image as string),
    validateInputs: {
      args: ["image"],
      fn: (ctx, i) => (ctx.inputFileExists(i.image as string) ? true : `Invalid image file: ${i.image}`),
    },
    run: async (ctx, i) => {
      const im = ctx.loadImage(i.image as string);
      return { outputs: [im, ctx.loadAlphaMask(i.image as string)] };
    },
  },
  {
    // nodes.py LoadImageMask: every input file (no content-type filter), and which channel becomes the mask.
    name: "LoadImageMask",
    displayName: "Load Image (as Mask)",
    inputTypes: (ctx) => ({ required: { image: [ctx.inputFiles(), { image_upload: true }], channel: [["alpha", "red", "green", "blue"]] } }),
    output: ["MASK"],
    category: "mask",
    pythonModule: "nodes",
    isChanged: (ctx, i) => ctx.inputFileHash(i.image as string),
    validateInputs: {
      args: ["image"],
      fn: (ctx, i) => (ctx.inputFileExists(i.image as string) ? true : `Invalid image file: ${i.image}`),
    },
    run: async (ctx, i) => ({ outputs: [tok("MASK", ctx.loadImage(i.image as string), i.channel)] }),
  },
  // The loaders the frontend's model library maps model folders to (useModelToNodeStore.registerDefaults in
  // frontend 1.27.10 reads nodeDefsByName[...].name for each, so a missing one breaks the panel), with
  // nodes.py's inputs; comfy_extras/nodes_video_model.py for ImageOnlyCheckpointLoader and
  // comfy_extras/nodes_upscale_model.py (a V3 node) for UpscaleModelLoader.
  {
    name: "ImageOnlyCheckpointLoader",
    inputTypes: (ctx) => ({ required: { ckpt_name: [ctx.models("checkpoints")] } }),
    output: ["MODEL", "CLIP_VISION", "VAE"],
    category: "loaders/video_models",
    pythonModule: "comfy_extras.nodes_video_model",
    run: async (_ctx, i) => ({ outputs: [tok("MODEL", i.ckpt_name), tok("CLIP_VISION", i.ckpt_name), tok("VAE", i.ckpt_name)] }),
  },
  {
    name: "LoraLoader",
    displayName: "Load LoRA",
    inputTypes: (ctx) => ({
      required: {
        model: ["MODEL", { tooltip: "The diffusion model the LoRA will be applied to." }],
        clip: ["CLIP", { tooltip: "The CLIP model the LoRA will be applied to." }],
        lora_name: [ctx.models("loras"), { tooltip: "The name of the LoRA." }],
        strength_model: ["FLOAT", { default: 1.0, min: -100.0, max: 100.0, step: 0.01, tooltip: "How strongly to modify the diffusion model. This value can be negative." }],
        strength_clip: ["FLOAT", { default: 1.0, min: -100.0, max: 100.0, step: 0.01, tooltip: "How strongly to modify the CLIP model. This value can be negative." }],
      },
    }),
    output: ["MODEL", "CLIP"],
    outputTooltips: ["The modified diffusion model.", "The modified CLIP model."],
    category: "loaders",
    description: "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together.",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("MODEL", i.model, i.lora_name, i.strength_model), tok("CLIP", i.clip, i.lora_name, i.strength_clip)] }),
  },
  {
    // A subclass of LoraLoader in nodes.py: it inherits CATEGORY, DESCRIPTION and OUTPUT_TOOLTIPS (both tooltips,
    // though it has one output) but not the display name.
    name: "LoraLoaderModelOnly",
    inputTypes: (ctx) => ({
      required: {
        model: ["MODEL"],
        lora_name: [ctx.models("loras")],
        strength_model: ["FLOAT", { default: 1.0, min: -100.0, max: 100.0, step: 0.01 }],
      },
    }),
    output: ["MODEL"],
    outputTooltips: ["The modified diffusion model.", "The modified CLIP model."],
    category: "loaders",
    description: "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together.",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("MODEL", i.model, i.lora_name, i.strength_model)] }),
  },
  {
    name: "ControlNetLoader",
    displayName: "Load ControlNet Model",
    inputTypes: (ctx) => ({ required: { control_net_name: [ctx.models("controlnet")] } }),
    output: ["CONTROL_NET"],
    category: "loaders",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("CONTROL_NET", i.control_net_name)] }),
  },
  {
    name: "DiffControlNetLoader",
    displayName: "Load ControlNet Model (diff)",
    inputTypes: (ctx) => ({ required: { model: ["MODEL"], control_net_name: [ctx.models("controlnet")] } }),
    output: ["CONTROL_NET"],
    category: "loaders",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("CONTROL_NET", i.model, i.control_net_name)] }),
  },
  {
    name: "StyleModelLoader",
    displayName: "Load Style Model",
    inputTypes: (ctx) => ({ required: { style_model_name: [ctx.models("style_models")] } }),
    output: ["STYLE_MODEL"],
    category: "loaders",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("STYLE_MODEL", i.style_model_name)] }),
  },
  {
    name: "CLIPVisionLoader",
    displayName: "Load CLIP Vision",
    inputTypes: (ctx) => ({ required: { clip_name: [ctx.models("clip_vision")] } }),
    output: ["CLIP_VISION"],
    category: "loaders",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("CLIP_VISION", i.clip_name)] }),
  },
  {
    name: "GLIGENLoader",
    inputTypes: (ctx) => ({ required: { gligen_name: [ctx.models("gligen")] } }),
    output: ["GLIGEN"],
    category: "loaders",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("GLIGEN", i.gligen_name)] }),
  },
  {
    name: "UpscaleModelLoader",
    v3: true,
    displayName: "Load Upscale Model",
    inputTypes: (ctx) => ({ required: { model_name: ["COMBO", { multiselect: false, options: ctx.models("upscale_models") }] } }),
    output: ["UPSCALE_MODEL"],
    category: "loaders",
    pythonModule: "comfy_extras.nodes_upscale_model",
    run: async (_ctx, i) => ({ outputs: [tok("UPSCALE_MODEL", i.model_name)] }),
  },
  {
    name: "VAELoader",
    displayName: "Load VAE",
    inputTypes: (ctx) => ({ required: { vae_name: [vaeList(ctx)] } }),
    output: ["VAE"],
    category: "loaders",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("VAE", i.vae_name)] }),
  },
  {
    name: "UNETLoader",
    displayName: "Load Diffusion Model",
    inputTypes: (ctx) => ({
      required: {
        unet_name: [ctx.models("diffusion_models")],
        weight_dtype: [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]],
      },
    }),
    output: ["MODEL"],
    category: "advanced/loaders",
    pythonModule: "nodes",
    run: async (ctx, i) => {
      await ctx.loadModel?.("diffusion_models", String(i.unet_name));
      return { outputs: [tok("MODEL", i.unet_name, i.weight_dtype)] };
    },
  },
  {
    name: "CLIPLoader",
    displayName: "Load CLIP",
    inputTypes: (ctx) => ({
      required: {
        clip_name: [ctx.models("text_encoders")],
        type: [["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"]],
      },
      optional: { device: [["default", "cpu"], { advanced: true }] },
    }),
    output: ["CLIP"],
    category: "advanced/loaders",
    description:
      "[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ clip-g / clip-l\nstable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\n hidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("CLIP", i.clip_name, i.type)] }),
  },
  {
    name: "DualCLIPLoader",
    inputTypes: (ctx) => ({
      required: {
        clip_name1: [ctx.models("text_encoders")],
        clip_name2: [ctx.models("text_encoders")],
        type: [["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]],
      },
      optional: { device: [["default", "cpu"], { advanced: true }] },
    }),
    output: ["CLIP"],
    category: "advanced/loaders",
    description:
      "[Recipes]\n\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\nflux: clip-l, t5\nhidream: at least one of t5 or llama, recommended t5 and llama\nhunyuan_image: qwen2.5vl 7b and byt5 small",
    pythonModule: "nodes",
    run: async (_ctx, i) => ({ outputs: [tok("CLIP", i.clip_name1, i.clip_name2, i.type)] }),
  },
  {
    name: "TripleCLIPLoader",
    v3: true,
    inputTypes: (ctx) => ({
      required: {
        clip_name1: ["COMBO", { multiselect: false, options: ctx.models("text_encoders") }],
        clip_name2: ["COMBO", { multiselect: false, options: ctx.models("text_encoders") }],
        clip_name3: ["COMBO", { multiselect: false, options: ctx.models("text_encoders") }],
      },
    }),
    output: ["CLIP"],
    category: "advanced/loaders",
    description: "[Recipes]\n\nsd3: clip-l, clip-g, t5",
    pythonModule: "comfy_extras.nodes_sd3",
    run: async (_ctx, i) => ({ outputs: [tok("CLIP", i.clip_name1, i.clip_name2, i.clip_name3)] }),
  },
  {
    name: "FluxGuidance",
    v3: true,
    inputTypes: () => ({
      required: {
        conditioning: ["CONDITIONING", {}],
        guidance: ["FLOAT", { default: 3.5, min: 0.0, max: 100.0, step: 0.1 }],
      },
    }),
    output: ["CONDITIONING"],
    category: "advanced/conditioning/flux",
    description: "",
    pythonModule: "comfy_extras.nodes_flux",
    run: async (_ctx, i) => ({ outputs: [tok("CONDITIONING", i.conditioning, i.guidance)] }),
  },
  {
    name: "ModelSamplingFlux",
    inputTypes: () => ({
      required: {
        model: ["MODEL"],
        max_shift: ["FLOAT", { default: 1.15, min: 0.0, max: 100.0, step: 0.01 }],
        base_shift: ["FLOAT", { default: 0.5, min: 0.0, max: 100.0, step: 0.01 }],
        width: ["INT", { default: 1024, min: 16, max: MAX_RESOLUTION, step: 8 }],
        height: ["INT", { default: 1024, min: 16, max: MAX_RESOLUTION, step: 8 }],
      },
    }),
    output: ["MODEL"],
    category: "advanced/model",
    pythonModule: "comfy_extras.nodes_model_advanced",
    run: async (_ctx, i) => ({ outputs: [tok("MODEL", i.model, i.max_shift, i.base_shift, i.width, i.height)] }),
  },
  {
    name: "BasicScheduler",
    inputTypes: () => ({
      required: {
        model: ["MODEL"],
        scheduler: [SCHEDULER_NAMES],
        steps: ["INT", { default: 20, min: 1, max: 10000 }],
        denoise: ["FLOAT", { default: 1.0, min: 0.0, max: 1.0, step: 0.01 }],
      },
    }),
    output: ["SIGMAS"],
    category: "sampling/custom_sampling/schedulers",
    pythonModule: "comfy_extras.nodes_custom_sampler",
    // denoise <= 0 gives empty sigmas; otherwise the last steps + 1 sigmas of int(steps / denoise).
    run: async (_ctx, i) => ({ outputs: [new FakeSigmas((i.denoise as number) <= 0 ? 0 : (i.steps as number), tagOf("sigmas", i.model, i.scheduler, i.steps, i.denoise))] }),
  },
  {
    name: "KSamplerSelect",
    inputTypes: () => ({ required: { sampler_name: [SAMPLER_NAMES] } }),
    output: ["SAMPLER"],
    category: "sampling/custom_sampling/samplers",
    pythonModule: "comfy_extras.nodes_custom_sampler",
    run: async (_ctx, i) => ({ outputs: [tok("SAMPLER", i.sampler_name)] }),
  },
  {
    name: "BasicGuider",
    inputTypes: () => ({ required: { model: ["MODEL"], conditioning: ["CONDITIONING"] } }),
    output: ["GUIDER"],
    category: "sampling/custom_sampling/guiders",
    pythonModule: "comfy_extras.nodes_custom_sampler",
    run: async (_ctx, i) => ({ outputs: [tok("GUIDER", i.model, i.conditioning)] }),
  },
  {
    name: "RandomNoise",
    inputTypes: () => ({ required: { noise_seed: ["INT", { default: 0, min: 0, max: U64_MAX, control_after_generate: true }] } }),
    output: ["NOISE"],
    category: "sampling/custom_sampling/noise",
    pythonModule: "comfy_extras.nodes_custom_sampler",
    run: async (_ctx, i) => ({ outputs: [tok("NOISE", i.noise_seed)] }),
  },
  {
    name: "SamplerCustomAdvanced",
    inputTypes: () => ({
      required: { noise: ["NOISE"], guider: ["GUIDER"], sampler: ["SAMPLER"], sigmas: ["SIGMAS"], latent_image: ["LATENT"] },
    }),
    output: ["LATENT", "LATENT"],
    outputName: ["output", "denoised_output"],
    category: "sampling/custom_sampling",
    pythonModule: "comfy_extras.nodes_custom_sampler",
    run: async (ctx, i) => {
      const out = await sample(ctx, (i.sigmas as FakeSigmas).steps, i.latent_image as FakeLatent, i.noise, i.guider, i.sampler, i.sigmas);
      return { outputs: [out, out] };
    },
  },
];

export const NODE_CLASSES: ReadonlyMap<string, NodeDef> = new Map(defs.map((d) => [d.name, d]));

/** True for samplers: the nodes whose steps the fault counters and `stepMs` apply to. */
export function isSampler(classType: string): boolean {
  return classType === "KSampler" || classType === "KSamplerAdvanced" || classType === "SamplerCustomAdvanced";
}

/** server.py node_info() (V1 classes) / Schema.get_v1_info() (V3 classes) for one class. */
export function nodeInfo(def: NodeDef, ctx: NodeContext): Record<string, unknown> {
  const input = def.inputTypes(ctx);
  const inputOrder = Object.fromEntries(Object.entries(input).map(([k, v]) => [k, Object.keys(v as object)]));
  if (def.v3) {
    return {
      input,
      input_order: inputOrder,
      output: def.output,
      output_is_list: def.output.map(() => false),
      output_name: def.outputName ?? def.output,
      output_tooltips: def.output.map((_, k) => def.outputTooltips?.[k] ?? null),
      name: def.name,
      display_name: def.displayName ?? null,
      description: def.description ?? "",
      python_module: def.pythonModule,
      category: def.category,
      output_node: def.outputNode === true,
      deprecated: false,
      experimental: false,
      api_node: false,
    };
  }
  const info: Record<string, unknown> = {
    input,
    input_order: inputOrder,
    output: def.output,
    output_is_list: def.output.map(() => false),
    output_name: def.outputName ?? def.output,
    name: def.name,
    display_name: def.displayName ?? def.name,
    description: def.description ?? "",
    python_module: def.pythonModule,
    category: def.category,
    output_node: def.outputNode === true,
  };
  if (def.outputTooltips) info.output_tooltips = def.outputTooltips;
  return info;
}
