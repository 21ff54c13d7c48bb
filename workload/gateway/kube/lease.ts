import type { Logger } from "pino";
import type { KubeClient } from "./client";

/**
 * Leader election on a coordination.k8s.io/v1 Lease: acquire when absent, expired or released; renew;
 * every write carries the resourceVersion read (optimistic concurrency), so two replicas can never both
 * win the same round.
 */
export class LeaseElector {
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private stopped = false;

  constructor(
    private readonly kube: KubeClient,
    private readonly ns: string,
    private readonly name: string,
    private readonly identity: string,
    private readonly cb: { onLead(): void | Promise<void>; onLose(): void | Promise<void> },
    private readonly log: Logger,
    private readonly o = { durationSeconds: 15, renewMs: 5000, retryMs: 2000 },
    private readonly now: () => Date = () => new Date(),
  ) {}

  isLeader(): boolean {
    return this.leading;
  }

  private path(named = true) {
    return `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.ns)}/leases${named ? `/${encodeURIComponent(this.name)}` : ""}`;
  }

  /** One round: returns whether this replica holds the Lease afterwards. */
  async tryOnce(): Promise<boolean> {
    const now = this.now();
    const micro = now.toISOString().replace("Z", "000Z").replace(/\.(\d{3})000Z$/, ".$1000Z");
    const got = await this.kube.request("GET", this.path());
    if (got.status === 404) {
      const created = await this.kube.request("POST", this.path(false), {
        apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: this.name, namespace: this.ns },
        spec: { holderIdentity: this.identity, leaseDurationSeconds: this.o.durationSeconds, acquireTime: micro, renewTime: micro, leaseTransitions: 0 },
      });
      if (created.status === 201 || created.status === 200) {
        return true;
      }
      return false;
    }
    if (got.status !== 200) throw new Error(`reading Lease ${this.name} answered ${got.status}`);
    const lease = got.json;
    const spec = lease.spec ?? {};
    const holder: string | undefined = spec.holderIdentity || undefined;
    const renew = spec.renewTime ? Date.parse(spec.renewTime) : 0;
    const expired = renew + (spec.leaseDurationSeconds ?? this.o.durationSeconds) * 1000 < now.getTime();
    if (holder && holder !== this.identity && !expired) return false;
    const mine = holder === this.identity;
    const next = {
      ...lease,
      spec: {
        ...spec, holderIdentity: this.identity, leaseDurationSeconds: this.o.durationSeconds, renewTime: micro,
        acquireTime: mine ? spec.acquireTime : micro, leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
      },
    };
    const put = await this.kube.request("PUT", this.path(), next);
    if (put.status === 200) {
      return true;
    }
    return false; // 409: someone else wrote first
  }

  start(): void {
    const round = async () => {
      if (this.stopped) return;
      let ok = false;
      try {
        ok = await this.tryOnce();
      } catch (err: unknown) {
        this.log.warn({ err: (err as Error).message }, "lease round failed");
      }
      if (ok && !this.leading) {
        this.leading = true;
        this.log.info({ identity: this.identity }, "became leader");
        await this.cb.onLead();
      } else if (!ok && this.leading) {
        this.leading = false;
        this.log.warn({ identity: this.identity }, "lost the lease");
        await this.cb.onLose();
      }
      if (!this.stopped) this.timer = setTimeout(() => void round(), this.leading ? this.o.renewMs : this.o.retryMs);
    };
    void round();
  }

  /** Stop and hand over at once: clear holderIdentity so a standby need not wait for expiry. */
  async release(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    const got = await this.kube.request("GET", this.path());
    if (got.status === 200 && got.json.spec?.holderIdentity === this.identity) {
      await this.kube.request("PUT", this.path(), { ...got.json, spec: { ...got.json.spec, holderIdentity: "", leaseDurationSeconds: 1 } });
    }
  }
}
