import WebSocket from "ws";
import type { Logger } from "pino";
import { PodClient, podClientId } from "./podClient";

/** What the dispatcher knows of one prompt it placed on this pod. */
export interface Slot {
  id: string;
  attempt: number;
  started: boolean;
  lastEventAt: number;
  /** The pod accepted it (POST /prompt answered): only then may its absence from the pod's queue mean "lost". */
  submitted: boolean;
  /** Store keys of this run's files already copied from the pod (from `executed`), not fetched again at completion. */
  copied?: Set<string>;
}

export interface WorkerEvents {
  /** Text or binary frame from the pod, delivered in order. */
  onMessage(w: Worker, data: WebSocket.RawData, isBinary: boolean): void;
  /** The pod's socket (re)opened: its prompts must be reconciled against /queue + /history. */
  onConnected(w: Worker): void;
  /** The pod went away (socket closed and HTTP unreachable). */
  onLost(w: Worker, reason: string): void;
  onReady(w: Worker): void;
}

/**
 * One ComfyUI pod: its WebSocket (submitting with a client_id stable for this pod), a health poll, and
 * the (at most two) prompts placed on it: one running, one buffered.
 */
export class Worker {
  readonly client: PodClient;
  readonly clientId: string;
  readonly slots = new Map<string, Slot>();
  /** The prompt the pod is executing (for previews, which carry no prompt_id). */
  runningId: string | undefined;
  /** Prompts the gateway itself interrupted or took back: their end is not the prompt's end. */
  readonly takenBack = new Set<string>();
  connected = false;
  terminating = false;
  private ws: WebSocket | undefined;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private reconnectDelay = 100;
  imageId: string | undefined;

  constructor(readonly key: string, readonly url: string, private readonly events: WorkerEvents, private readonly log: Logger, readonly capacity = 2) {
    this.client = new PodClient(url.replace(/\/$/, ""));
    this.clientId = podClientId(key);
  }

  get ready(): boolean {
    return this.connected && !this.terminating && !this.closed;
  }
  get free(): number {
    return this.ready ? this.capacity - this.slots.size : 0;
  }

  start(): void {
    this.connect();
  }

  private connect(): void {
    if (this.closed) return;
    const wsUrl = this.url.replace(/^http/, "ws").replace(/\/$/, "") + `/ws?clientId=${encodeURIComponent(this.clientId)}`;
    const ws = new WebSocket(wsUrl, { handshakeTimeout: 5000 });
    this.ws = ws;
    ws.on("open", () => {
      this.failures = 0;
      this.reconnectDelay = 100;
      this.connected = true;
      this.log.info({ pod: this.key }, "pod connected");
      this.events.onConnected(this);
      this.events.onReady(this);
    });
    ws.on("message", (data, isBinary) => {
      if (!this.closed) this.events.onMessage(this, data, isBinary);
    });
    ws.on("error", (err) => this.log.debug({ pod: this.key, err: err.message }, "pod socket error"));
    ws.on("close", () => {
      if (this.ws !== ws) return;
      const was = this.connected;
      this.connected = false;
      this.ws = undefined;
      if (this.closed) return;
      this.failures++;
      if (was || this.failures === 1) this.log.warn({ pod: this.key, url: this.url }, "pod unreachable; prompts wait for it");
      // A pod that restarts comes back within a few reconnects and the reconcile on reconnect finds
      // what it lost; one that stays away gives its prompts back after three failed reconnects.
      if (this.slots.size > 0 && this.failures >= 3) this.events.onLost(this, "pod unreachable");
      this.timer = setTimeout(() => this.connect(), this.reconnectDelay);
      this.reconnectDelay = Math.min(this.reconnectDelay * 2, 2000);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = undefined;
    this.connected = false;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        ws.once("close", () => resolve());
        ws.terminate();
      });
    }
  }
}
