export * from "./gpuUserData";
