export * from "./types";
export { MemoryStore } from "./memory";
export { DynamoStore, PromptTooLarge } from "./dynamo";
export { startEmbeddedStore } from "./embedded";
export * from "./objects";
