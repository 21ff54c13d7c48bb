/**
 * The gateway image's build context, relative to the repository root (workload/gateway/Dockerfile's
 * header lists the same files; the image builder hashes exactly these, so a change anywhere else
 * does not rebuild the gateway).
 */
export const GATEWAY_IMAGE_CONTEXT = ["package.json", "package-lock.json", "tsconfig.json", "workload/gateway"];
