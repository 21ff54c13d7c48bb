/**
 * Net change per key for one batch. SQS (standard) neither orders nor de-duplicates messages, so a
 * batch can hold a create and a later delete of the same key in any order; S3's sequencer is the
 * only reliable order between events for one key.
 */
import type { Action, ObjectEvent } from "./events";

export interface Change {
  readonly action: Action;
  readonly key: string;
}

export interface NetChanges {
  /** Deletes first (they free disk space for the puts), then puts; each sorted by key. */
  readonly changes: Change[];
  /** Messages that carried at least one valid event, superseded ones included. */
  readonly messageIds: string[];
  /** Events dropped because a later event for the same key was in the batch. */
  readonly superseded: number;
}

/**
 * S3 UG: "compare the sequencer values as strings from left to right, after padding the shorter
 * value with leading zeros". Case-insensitive so that a hand-written test event still compares.
 */
export function compareSequencers(a: string, b: string): number {
  const width = Math.max(a.length, b.length);
  const pa = a.toUpperCase().padStart(width, "0");
  const pb = b.toUpperCase().padStart(width, "0");
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}

export function netChanges(events: readonly ObjectEvent[]): NetChanges {
  const latest = new Map<string, ObjectEvent>();
  const messageIds = new Set<string>();
  for (const event of events) {
    messageIds.add(event.messageId);
    const current = latest.get(event.key);
    // Equal sequencers are the same event delivered twice: keep the first.
    if (current === undefined || compareSequencers(event.sequencer, current.sequencer) > 0) {
      latest.set(event.key, event);
    }
  }
  const byKey = (x: Change, y: Change) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0);
  const all = [...latest.values()].map((e): Change => ({ action: e.action, key: e.key }));
  const changes = [...all.filter((c) => c.action === "delete").sort(byKey), ...all.filter((c) => c.action === "put").sort(byKey)];
  return { changes, messageIds: [...messageIds], superseded: events.length - latest.size };
}
