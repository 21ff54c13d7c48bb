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

/** The node-side tool the user data installs and runs before kubelet (RAID0, pinned models, image pre-pull, labels). */
export const NODE_MODELS_TOOL = "/usr/local/bin/comfyui-models";

/** Environment file the user-data writes for the tool: bucket, region, pins, limits. */
export const NODE_MODELS_ENV_FILE = "/etc/comfyui-models.env";

/**
 * GB of a GPU node's NVMe array that models never use, beyond kubelet's eviction line (10% of the
 * array): the ComfyUI image unpacked (30 GB), ComfyUI's scratch per GPU (20 GB, its emptyDir
 * sizeLimit) and a margin (10 GB). One figure for the boot's pinned copy (user data RESERVE_GB) and
 * the model agent (--reserve-gb), so neither fills what the other leaves free. `maxGpusPerNode`: the
 * most GPUs of any instance type the pool may launch (the reserve must hold on the largest).
 */
export function modelsReserveGb(maxGpusPerNode: number): number {
  return 30 + 20 * Math.max(1, maxGpusPerNode) + 10;
}

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
