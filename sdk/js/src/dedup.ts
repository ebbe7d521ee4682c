// Drops deliveries seen before, by sequence: a device may get a message twice (a
// reconnect before its ack, a cluster's overlap window or resync). Keeps the last
// `capacity` sequences (a ring plus a set): bounded memory, O(1) per message.

export class SequenceWindow {
  private readonly seen = new Set<number>();
  private readonly ring: number[];
  private next = 0;

  constructor(private readonly capacity = 10_000) {
    this.ring = new Array<number>(capacity).fill(-1);
  }

  /** Whether `sequence` is new (and remembers it). Sequence 0 (transient) always is. */
  admit(sequence: number): boolean {
    if (sequence === 0) return true;
    if (this.seen.has(sequence)) return false;
    const evicted = this.ring[this.next];
    if (evicted >= 0) this.seen.delete(evicted);
    this.ring[this.next] = sequence;
    this.seen.add(sequence);
    this.next = (this.next + 1) % this.capacity;
    return true;
  }
}
