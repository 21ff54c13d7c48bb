import WebSocket from "ws";
import type { Logger } from "pino";
import type { AgentClient } from "../models/agentClient";
import { PodClient } from "./podClient";

/** What the dispatcher knows of one prompt it placed on this pod. */
export interface Slot {
  id: string;
  attempt: number;
  /** The client_id this run was submitted with (this leadership's, or an earlier leader's for an adopted run). */
  podClient: string;
  started: boolean;
  /** The pod accepted it (POST /prompt answered): only then may its absence from the pod's queue mean "lost". */
  submitted: boolean;
  lastEventAt: number;
  /** Store keys of this run's files already copied from the pod (from `executed`), not fetched again at completion. */
  copied?: Set<string>;
  /** Files of this run that could not be copied after every retry: the ending names them. */
  copyFailures?: string[];
  /** Taken over from an earlier leader: running or buffered is unknown until the pod's queue is read. */
  adopted?: boolean;
  /** The pod ended it (`executing null`): no longer in the pod's queue, its history and files are being read. */
  finishing?: boolean;
  /** The client deleted it while its claim or submit was in flight: take it back once submitted. */
  cancelRequested?: boolean;
  /** Whoever asked for that deletion, told once it is settled (true: taken off the pod and cancelled). */
  cancelWaiters?: ((cancelled: boolean) => void)[];
  /** Model files held for this prompt on the pod's node (the agent's hold, renewed while it lasts), and when last renewed. */
  held?: { files: string[]; at: number };
}

export interface WorkerEvents {
  /** Text or binary frame from the pod (on any of its sockets), delivered in order. */
  onMessage(w: Worker, data: WebSocket.RawData, isBinary: boolean): void;
  /** The pod's socket (re)opened: its prompts must be reconciled against /queue + /history. */
  onConnected(w: Worker): void;
  /** The pod went away (socket closed and reconnects failed). */
  onLost(w: Worker, reason: string): void;
  onReady(w: Worker): void;
}

/** One socket to the pod under one client_id, reconnecting with backoff until closed. */
class PodSocket {
  private ws: WebSocket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private delay = 100;
  failures = 0;
  open = false;

  constructor(
    private readonly url: string,
    readonly clientId: string,
    private readonly on: { open(): void; message(data: WebSocket.RawData, isBinary: boolean): void; close(wasOpen: boolean): void },
  ) {}

  connect(): void {
    if (this.closed) return;
    const ws = new WebSocket(this.url.replace(/^http/, "ws") + `/ws?clientId=${encodeURIComponent(this.clientId)}`, { handshakeTimeout: 5000 });
    this.ws = ws;
    ws.on("open", () => {
      this.failures = 0;
      this.delay = 100;
      this.open = true;
      this.on.open();
    });
    ws.on("message", (data, isBinary) => {
      if (!this.closed) this.on.message(data, isBinary);
    });
    ws.on("error", () => undefined);
    ws.on("close", () => {
      if (this.ws !== ws) return;
      const was = this.open;
      this.open = false;
      this.ws = undefined;
      if (this.closed) return;
      this.failures++;
      this.on.close(was);
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 2000);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = undefined;
    this.open = false;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        ws.once("close", () => resolve());
        // A close handshake, so the pod drops this client_id's registration before the next leader registers it.
        if (ws.readyState === WebSocket.OPEN) ws.close(1001, "gateway leadership ends");
        else ws.terminate();
        setTimeout(() => ws.terminate(), 1000).unref();
      });
    }
  }
}

/**
 * One ComfyUI pod: its WebSocket under this leadership's client_id, extra listening sockets under an
 * earlier leader's client_id while runs that leader submitted are still going, the (at most two) prompts
 * placed on it — one running, one buffered — and its health: a pod whose prompts stop making progress is
 * `suspect` and gets no work until a probe shows it idle again.
 */
export class Worker {
  readonly client: PodClient;
  readonly slots = new Map<string, Slot>();
  /** The prompt the pod is executing (for previews, which carry no prompt_id). */
  runningId: string | undefined;
  /** Prompts the gateway itself interrupted or took back: their end is not the prompt's end. */
  readonly takenBack = new Set<string>();
  terminating = false;
  /** Why this pod is out of rotation until a probe finds it idle (it stopped making progress). */
  suspect: string | undefined;
  /** Last sign of life about our prompts (an event, or a submit to an idle pod): the stall clock. */
  lastSignAt: number;
  imageId: string | undefined;
  /** The model agent of this pod's node (undefined: no agent known; models are whatever the node holds). */
  agent: AgentClient | undefined;
  private readonly main: PodSocket;
  private readonly listeners = new Map<string, PodSocket>();
  private closed = false;

  constructor(
    readonly key: string,
    readonly url: string,
    /** The client_id of this pod under the current leadership. */
    readonly clientId: string,
    private readonly events: WorkerEvents,
    private readonly log: Logger,
    now: number,
    readonly capacity = 2,
  ) {
    this.client = new PodClient(url.replace(/\/$/, ""));
    this.lastSignAt = now;
    this.main = new PodSocket(this.client.baseUrl, clientId, {
      open: () => {
        this.log.info({ pod: this.key }, "pod connected");
        this.events.onConnected(this);
        this.events.onReady(this);
      },
      message: (data, isBinary) => this.events.onMessage(this, data, isBinary),
      close: (was) => {
        if (was || this.main.failures === 1) this.log.warn({ pod: this.key, url: this.url }, "pod unreachable; prompts wait for it");
        // A pod that restarts comes back within a few reconnects and the reconcile on reconnect finds
        // what it lost; one that stays away gives its prompts back after three failed reconnects.
        if (this.slots.size > 0 && this.main.failures >= 3) this.events.onLost(this, "pod unreachable");
      },
    });
  }

  get connected(): boolean {
    return this.main.open;
  }
  /** May get work: connected, not terminating, not suspected of hanging. */
  get ready(): boolean {
    return this.connected && !this.terminating && !this.closed && !this.suspect;
  }
  /** Prompts in the pod's queue (running or buffered); one being finished is out of it already. */
  get load(): number {
    let n = 0;
    for (const s of this.slots.values()) if (!s.finishing) n++;
    return n;
  }
  get free(): number {
    return this.ready ? this.capacity - this.load : 0;
  }

  start(): void {
    this.main.connect();
  }

  /** Hear the events of runs an earlier leader submitted under `clientId` (adopted on take-over). */
  listenAs(clientId: string): void {
    if (this.closed || clientId === this.clientId || this.listeners.has(clientId)) return;
    const s = new PodSocket(this.client.baseUrl, clientId, {
      open: () => this.log.info({ pod: this.key, clientId }, "listening for an earlier leader's runs"),
      message: (data, isBinary) => this.events.onMessage(this, data, isBinary),
      close: () => undefined,
    });
    this.listeners.set(clientId, s);
    s.connect();
  }

  /** Stops listening under client ids no slot uses any more. */
  pruneListeners(): void {
    const used = new Set([...this.slots.values()].map((s) => s.podClient));
    for (const [id, s] of this.listeners) {
      if (used.has(id)) continue;
      this.listeners.delete(id);
      void s.close();
    }
  }

  /** Slot ended: forget its bookkeeping. */
  release(id: string): void {
    // Its files may be evicted again once no other prompt holds them (the agent keeps holds per prompt).
    if (this.slots.get(id)?.held && this.agent) void this.agent.release(id).catch(() => undefined);
    this.slots.delete(id);
    if (this.runningId === id) this.runningId = undefined;
    this.takenBack.delete(id);
    this.pruneListeners();
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([this.main.close(), ...[...this.listeners.values()].map((s) => s.close())]);
    this.listeners.clear();
  }
}
