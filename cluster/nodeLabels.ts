/** Label carried by system nodes; controllers are pinned to them so GPU nodes can go to zero. */
export const SYSTEM_NODE_LABEL = { "comfyui.studio/pool": "system" } as const;
