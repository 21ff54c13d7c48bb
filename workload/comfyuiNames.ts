/** ComfyUI's port in its pods, and the Service over them (names the gateway and the policies share). */
export const COMFYUI_PORT = 8848;
/** The Service whose EndpointSlices tell the gateway which ComfyUI pods are ready. */
export const COMFYUI_PODS_SERVICE = "comfyui-queue";
