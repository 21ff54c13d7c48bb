/**
 * Stopping the image builds of a `pulumi up` that is cancelled, so no CodeBuild build keeps
 * building and pushing after the update has given up. Runs inside the dynamic provider's process
 * (image/provider.ts), which sees a cancellation in three ways:
 *
 * - Pulumi's cancel (the first Ctrl-C): the engine sends the provider a Cancel RPC and lets the
 *   running operations go on. @pulumi/pulumi's dynamic provider host answers Cancel and does
 *   nothing else (cmd/dynamic-provider/index.js `cancel` in 3.276.0), and hands a dynamic provider
 *   no hook for it. So the hooks observe the host's own gRPC server: the one HTTP/2 server of the
 *   process that has `stream` listeners (grpc-js serves every RPC as an HTTP/2 stream) gets one more
 *   listener, which only reads the `:path` header of each stream; the host still answers the call.
 * - the engine shutting the provider down (the second Ctrl-C, a failed update): plugin Close
 *   sends SIGINT to the provider process and kills it 5 s later (pulumi sdk/go/common/resource/
 *   plugin/plugin.go, Close via cmdutil.InterruptChildren).
 * - SIGTERM from anything else.
 *
 * On any of them every running build gets StopBuild at once, the waits end with a "cancelled"
 * error, and on a signal the process exits once the StopBuild calls are answered (at most
 * STOP_GRACE_MS, inside the engine's 5 s).
 *
 * The state is one object per process on globalThis, not module state: the provider is serialized
 * into the Pulumi state and deserialized in the provider process, where these functions run.
 */

/** The running builds of this process and the cancellation, once it came. */
export interface CancelState {
  /** Build id → the call that stops it. */
  running: Map<string, () => Promise<unknown>>;
  /** Why the update was cancelled; undefined until it is. */
  reason?: string;
  /** Waits to end early when the cancellation comes. */
  sleepers: Set<() => void>;
  hooked: boolean;
}

/** How long a signal waits for StopBuild answers before the process exits (the engine kills it at 5 s). */
export const STOP_GRACE_MS = 4000;

/** The process-wide state (created on first use). */
export function cancelState(): CancelState {
  const g = globalThis as { __comfyuiImageBuildCancel?: CancelState };
  g.__comfyuiImageBuildCancel ??= { running: new Map(), sleepers: new Set(), hooked: false };
  return g.__comfyuiImageBuildCancel;
}

/** Marks the update cancelled, wakes every wait and sends StopBuild for every running build; resolves when all are answered or after graceMs. */
export async function cancelAll(state: CancelState, reason: string, graceMs = STOP_GRACE_MS): Promise<void> {
  state.reason ??= reason;
  for (const wake of [...state.sleepers]) wake();
  const stops = [...state.running.values()].map((stop) => stop().catch(() => undefined));
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(stops), new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
  if (timer) clearTimeout(timer);
}

/** A sleep that ends early when the update is cancelled. */
export function cancellableSleep(state: CancelState, ms: number): Promise<void> {
  if (state.reason !== undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const handle: { timer?: NodeJS.Timeout } = {};
    const done = () => {
      clearTimeout(handle.timer);
      state.sleepers.delete(done);
      resolve();
    };
    handle.timer = setTimeout(done, ms);
    state.sleepers.add(done);
  });
}

/** The part of `process` the hooks use (a test hands in its own). */
export interface HookProcess {
  once(event: "SIGINT" | "SIGTERM", listener: () => void): unknown;
  exit(code: number): never | void;
}

/** The gRPC method the engine calls on Pulumi's cancel (pulumirpc.ResourceProvider, provider.proto). */
export const CANCEL_RPC_PATH = "/pulumirpc.ResourceProvider/Cancel";

/** A server the hooks may listen on: node's HTTP/2 server, as grpc-js runs it. */
interface StreamServer {
  listeners(event: string): unknown[];
  prependListener(event: "stream", listener: (stream: unknown, headers: Record<string, unknown>) => void): unknown;
}

/** The HTTP/2 servers of this process that serve streams (grpc-js's); none outside a provider host. */
export function streamServers(): StreamServer[] {
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  return handles.filter(
    (h): h is StreamServer =>
      typeof h === "object" && h !== null && typeof (h as StreamServer).listeners === "function" && typeof (h as StreamServer).prependListener === "function" && (h as StreamServer).listeners("stream").length > 0,
  );
}

/**
 * Installs the hooks once per process: SIGINT and SIGTERM stop every running build and then exit
 * (130/143, as the shell would report the signal); Pulumi's Cancel RPC stops them and lets the
 * waits fail with "cancelled". `log` reports what happened.
 */
export function installCancelHooks(state: CancelState, log: (m: string) => void, proc: HookProcess = process, servers: StreamServer[] = streamServers()): void {
  if (state.hooked) return;
  state.hooked = true;
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    proc.once(signal, () => {
      const ids = [...state.running.keys()];
      log(`${signal}: stopping ${ids.length} image build(s)${ids.length ? ` (${ids.join(", ")})` : ""}`);
      void cancelAll(state, `received ${signal}`).finally(() => proc.exit(code));
    });
  }
  for (const server of servers) {
    server.prependListener("stream", (_stream, headers) => {
      if (headers[":path"] !== CANCEL_RPC_PATH) return;
      const ids = [...state.running.keys()];
      log(`Pulumi cancelled the update: stopping ${ids.length} image build(s)${ids.length ? ` (${ids.join(", ")})` : ""}`);
      void cancelAll(state, "Pulumi cancelled the update");
    });
  }
}
