import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import type { KubeClient } from "./client";

/** Where followers find the leader: set by the holder on the Lease it writes. */
export const LEADER_ADDRESS_ANNOTATION = "comfyui.studio/gateway-address";

export interface LeaseTimings {
  /** How long a holder's record stays valid for others without a renewal. @defaultValue 15 */
  durationSeconds: number;
  /** A leader that has not renewed for this long stops leading — before anyone else may take the Lease. @defaultValue 10000 */
  renewDeadlineMs: number;
  /** Time between rounds (renew while leading, try to acquire otherwise). @defaultValue 2000 */
  retryMs: number;
  /** One Kubernetes call's limit. @defaultValue 5000 */
  requestTimeoutMs: number;
}

/** client-go's leaderelection defaults (LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod 2 s). */
export const LEASE_DEFAULTS: LeaseTimings = { durationSeconds: 15, renewDeadlineMs: 10000, retryMs: 2000, requestTimeoutMs: 5000 };

export interface LeaseCallbacks {
  /** This replica holds the Lease now (not awaited: renewals go on while the leader starts up). */
  onLead(): void;
  /** Leadership ended (deadline missed, Lease taken, or released). */
  onLose(): void;
  /** Who leads, as last read: the holder's address, or undefined when none (or this replica). */
  onLeader?(address: string | undefined): void;
}

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 * - a candidate takes the Lease only when its record has not changed for `durationSeconds` as measured on
 *   the candidate's own monotonic clock since it last saw it change (never by comparing wall clocks), or
 *   when the holder released it; every write carries the resourceVersion read, so one writer wins a round;
 * - the leader renews every `retryMs` and counts itself leader only until `renewDeadlineMs` after the start
 *   of its last successful renewal — a check (`isLeader()`) and a timer, independent of any request in
 *   flight — so it stops before any other replica can take over (deadline < duration);
 * - `onLead` is not awaited, so a slow start-up never delays a renewal.
 */
export class LeaseElector {
  private timer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private leading = false;
  private stopped = false;
  /** Monotonic start of the last successful acquire or renew. */
  private renewedAt: number | undefined;
  /** The record as last seen, and when (monotonic) it was first seen like that. */
  private observed: { key: string; at: number } | undefined;
  private readonly o: LeaseTimings;

  constructor(
    private readonly kube: KubeClient,
    private readonly ns: string,
    private readonly name: string,
    private readonly identity: string,
    private readonly cb: LeaseCallbacks,
    private readonly log: Logger,
    timings: Partial<LeaseTimings> = {},
    /** This replica's address for followers (written on the Lease while it holds it). */
    private readonly address?: string,
    private readonly clock: { mono(): number; wall(): Date } = { mono: () => performance.now(), wall: () => new Date() },
  ) {
    this.o = { ...LEASE_DEFAULTS, ...timings };
    if (this.o.renewDeadlineMs >= this.o.durationSeconds * 1000) throw new Error("the renew deadline must be shorter than the lease duration");
  }

  /** Leader right now: the last renewal began less than the renew deadline ago. */
  isLeader(): boolean {
    return !this.stopped && this.renewedAt !== undefined && this.clock.mono() - this.renewedAt < this.o.renewDeadlineMs;
  }

  private path(named = true) {
    return `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.ns)}/leases${named ? `/${encodeURIComponent(this.name)}` : ""}`;
  }

  private micro(d: Date): string {
    // MicroTime: RFC 3339 with microseconds.
    return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
  }

  /** One round: returns whether this replica holds the Lease afterwards. */
  async tryOnce(): Promise<boolean> {
    const start = this.clock.mono();
    const micro = this.micro(this.clock.wall());
    const t = { timeoutMs: this.o.requestTimeoutMs };
    const annotations = this.address ? { [LEADER_ADDRESS_ANNOTATION]: this.address } : {};
    const got = await this.kube.request("GET", this.path(), undefined, t);
    if (got.status === 404) {
      const created = await this.kube.request("POST", this.path(false), {
        apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: this.name, namespace: this.ns, annotations },
        spec: { holderIdentity: this.identity, leaseDurationSeconds: this.o.durationSeconds, acquireTime: micro, renewTime: micro, leaseTransitions: 0 },
      }, t);
      if (created.status !== 201 && created.status !== 200) return false;
      this.renewedAt = start;
      return true;
    }
    if (got.status !== 200) throw new Error(`reading Lease ${this.name} answered ${got.status}`);
    const lease = got.json;
    const spec = lease.spec ?? {};
    const holder: string | undefined = spec.holderIdentity || undefined;
    const key = `${holder ?? ""}|${spec.renewTime ?? ""}|${lease.metadata?.resourceVersion ?? ""}`;
    if (this.observed?.key !== key) this.observed = { key, at: start };
    const mine = holder === this.identity;
    const duration = (spec.leaseDurationSeconds ?? this.o.durationSeconds) * 1000;
    if (holder && !mine && start - this.observed.at < duration) {
      this.cb.onLeader?.(lease.metadata?.annotations?.[LEADER_ADDRESS_ANNOTATION]);
      return false;
    }
    const next = {
      ...lease,
      metadata: { ...lease.metadata, annotations: { ...(lease.metadata?.annotations ?? {}), ...annotations } },
      spec: {
        ...spec, holderIdentity: this.identity, leaseDurationSeconds: this.o.durationSeconds, renewTime: micro,
        acquireTime: mine ? spec.acquireTime : micro, leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
      },
    };
    const put = await this.kube.request("PUT", this.path(), next, t);
    if (put.status !== 200) return false; // 409: someone else wrote first
    this.renewedAt = start;
    return true;
  }

  start(): void {
    const round = async () => {
      if (this.stopped) return;
      try {
        await this.tryOnce();
      } catch (err: unknown) {
        this.log.warn({ err: (err as Error).message }, "lease round failed");
      }
      this.check();
      if (!this.stopped) this.timer = setTimeout(() => void round(), this.o.retryMs);
    };
    void round();
  }

  /** Turns leadership on or off from isLeader(), and arms the deadline timer. */
  private check(): void {
    const now = this.isLeader();
    if (now && !this.leading) {
      this.leading = true;
      this.log.info({ identity: this.identity }, "became leader");
      this.cb.onLeader?.(undefined);
      this.cb.onLead();
    } else if (!now && this.leading) {
      this.leading = false;
      this.log.warn({ identity: this.identity }, "leadership ended (renew deadline passed or Lease lost)");
      this.cb.onLose();
    }
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
    if (this.leading && this.renewedAt !== undefined) {
      // Fires at the deadline even while a renewal hangs in a slow request.
      this.watchdog = setTimeout(() => this.check(), Math.max(1, this.renewedAt + this.o.renewDeadlineMs - this.clock.mono() + 1));
      this.watchdog.unref();
    }
  }

  /** Stop and hand over at once: clear holderIdentity so a follower need not wait for expiry. */
  async release(): Promise<void> {
    const was = this.leading;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.watchdog) clearTimeout(this.watchdog);
    this.leading = false;
    this.renewedAt = undefined;
    if (!was) return;
    const got = await this.kube.request("GET", this.path(), undefined, { timeoutMs: this.o.requestTimeoutMs });
    if (got.status === 200 && got.json.spec?.holderIdentity === this.identity) {
      await this.kube.request("PUT", this.path(), { ...got.json, spec: { ...got.json.spec, holderIdentity: "", leaseDurationSeconds: 1 } }, { timeoutMs: this.o.requestTimeoutMs });
    }
  }
}
