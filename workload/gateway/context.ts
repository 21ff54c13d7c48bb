import type { Logger } from "pino";
import type { Dispatcher } from "./dispatch/dispatcher";
import type { Discovery } from "./discovery";
import { GatewayError } from "./protocol/errors";
import type { ObjectStore } from "./store/objects";
import type { PromptRecord, Store } from "./store/types";

/** What the routes share: the store, the object stores, the discovery cache and (on the leader) the dispatcher. */
export class GatewayContext {
  dispatcher: Dispatcher | undefined;
  leader = false;
  closing = false;
  /** Told of every newly stored prompt (the accepted-prompts figure). */
  onAccepted: () => void = () => {};

  constructor(
    readonly store: Store,
    readonly files: { output: ObjectStore; temp: ObjectStore; input: ObjectStore; user: ObjectStore },
    readonly discovery: Discovery,
    readonly log: Logger,
    readonly maxUploadBytes: number,
  ) {}

  requireLeader(): void {
    if (!this.leader || !this.dispatcher) throw new GatewayError("GW_ERR_NOT_LEADER");
  }

  async openPrompts(): Promise<PromptRecord[]> {
    return this.dispatcher ? [...this.dispatcher.open.values()] : this.store.listOpen();
  }

  async queueRemaining(): Promise<number> {
    return this.dispatcher ? this.dispatcher.queueRemaining() : (await this.openPrompts()).length;
  }

  /** "x.png", "sub/x.png", "x.png [output]": exists in the gateway's stores? */
  async fileExists(v: string): Promise<boolean> {
    const m = /^(.*) \[(input|output|temp)\]$/.exec(v);
    const type = (m?.[2] ?? "input") as "input" | "output" | "temp";
    const name = m ? m[1] : v;
    if (!name || name.startsWith("/") || name.split("/").includes("..")) return false;
    try {
      return (await this.files[type].get(name)) !== undefined;
    } catch {
      return false;
    }
  }
}
