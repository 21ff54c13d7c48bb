/**
 * What a GPU node, the sync Lambda and the ComfyUI Deployment agree on. One place, so the user-data,
 * the SSM command and the hostPath volume can never drift apart.
 */

/**
 * Where a GPU node keeps ComfyUI's models: a folder on the NVMe RAID0 array that nodeadm's
 * `setup-local-disks raid0` mounts at /mnt/k8s-disks/0 (see docs/models.md for why this array).
 * Only complete files ever appear here; ComfyUI mounts it read-only.
 */
export const NODE_MODELS_DIR = "/mnt/k8s-disks/0/comfyui-models";

/** Downloads in progress (same filesystem as NODE_MODELS_DIR, so the final rename is atomic). */
export const NODE_MODELS_STAGING_DIR = "/mnt/k8s-disks/0/.comfyui-models-staging";

/** Per-file records (ETag, size) that make a second fill or sync idempotent. */
export const NODE_MODELS_STATE_DIR = "/mnt/k8s-disks/0/.comfyui-models-state";

/** The node-side tool the user-data installs; the boot fill and every SSM sync command run it. */
export const NODE_MODELS_TOOL = "/usr/local/bin/comfyui-models";

/** Environment file the user-data writes for the tool: bucket, region, hot set, limits. */
export const NODE_MODELS_ENV_FILE = "/etc/comfyui-models.env";

/**
 * ComfyUI's model folders (folder_paths.py): the only top-level prefixes of the models bucket that
 * are copied to nodes. Anything else in the bucket is ignored and, when it arrives through an
 * event, rejected with a clear log line.
 */
export const MODEL_FOLDERS: readonly string[] = [
  "audio_encoders",
  "checkpoints",
  "clip",
  "clip_vision",
  "configs",
  "controlnet",
  "diffusers",
  "diffusion_models",
  "embeddings",
  "gligen",
  "hypernetworks",
  "latent_upscale_models",
  "loras",
  "model_patches",
  "photomaker",
  "style_models",
  "text_encoders",
  "unet",
  "upscale_models",
  "vae",
  "vae_approx",
];

/** Label every GPU node carries (set by the GPU NodePool); the ComfyUI Deployment selects it. */
export const GPU_POOL_LABEL = { "comfyui.studio/pool": "gpu" } as const;

/** Taint on every GPU node: only pods that need a GPU (and tolerate it) land there. */
export const GPU_TAINT = { key: "nvidia.com/gpu", value: "true", effect: "NoSchedule" } as const;
